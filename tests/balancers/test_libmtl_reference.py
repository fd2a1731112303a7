"""Our balancers against LibMTL's weighting code on the same losses and gradients.

``fixtures/libmtl.json`` holds what LibMTL's weightings did on a fixed problem, written by
``tools/libmtl_reference.py`` (its docstring describes the problem and the harness; the LibMTL
commit is in the fixture). Here the same losses ``L_t = ℓ_kt + g_ktᵀθ + h_ktᵀφ_t`` (θ, φ_t = 0)
go through our balancers as the engine calls them: ``create_balancer``, ``backward(losses,
shared_parameters)``, ``weights()``. LibMTL runs in float64, our balancers in float32.

Where the two differ by a choice that ``docs/balancers.md`` ("Compared with LibMTL") documents,
the test compares what is the same and asserts the difference.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from densetasks.balancers import BALANCERS, Balancer, create_balancer
from densetasks.tasks.base import Likelihood

FIXTURE = json.loads(
    (Path(__file__).parent / "fixtures" / "libmtl.json").read_text(encoding="utf-8")
)
INPUTS = FIXTURE["inputs"]
STEPS = len(INPUTS["values"])
TASK_COUNT = len(INPUTS["values"][0])
NAMES = [f"task{index}" for index in range(TASK_COUNT)]

NOT_IN_LIBMTL = {"fixed", "mean", "config", "dualproj", "pcd"}
"""Our balancers LibMTL has no method for (its EW is our ``equal`` and ``sum``)."""


class Problem(nn.Module):
    """θ and the heads φ_t of the fixture's problem, and its losses at a step."""

    def __init__(self) -> None:
        super().__init__()
        shared_size = len(INPUTS["shared_gradients"][0][0])
        head_size = len(INPUTS["head_gradients"][0][0])
        self.theta = nn.Parameter(torch.zeros(shared_size, dtype=torch.float64))
        self.heads = nn.ParameterList(
            [nn.Parameter(torch.zeros(head_size, dtype=torch.float64)) for _ in NAMES]
        )

    def losses(self, step: int) -> dict[str, torch.Tensor]:
        values = torch.tensor(INPUTS["values"][step], dtype=torch.float64)
        shared = torch.tensor(INPUTS["shared_gradients"][step], dtype=torch.float64)
        heads = torch.tensor(INPUTS["head_gradients"][step], dtype=torch.float64)
        return {
            name: values[index] + shared[index] @ self.theta + heads[index] @ self.heads[index]
            for index, name in enumerate(NAMES)
        }


@dataclass
class Step:
    """What our balancer did at one step."""

    weights: list[float]
    shared_grad: torch.Tensor
    head_grads: list[torch.Tensor]
    balancer_grads: dict[str, torch.Tensor]


def run_ours(
    balancer: Balancer,
    *,
    seed: int | None = None,
    before_step: Callable[[Balancer, int], None] = lambda balancer, step: None,
) -> list[Step]:
    """Every step of the fixture through ``balancer.backward``; the problem never moves."""
    problem = Problem()
    balancer.train()
    steps = []
    for step in range(STEPS):
        problem.zero_grad(set_to_none=True)
        balancer.zero_grad(set_to_none=True)
        before_step(balancer, step)
        losses = problem.losses(step)
        if seed is not None:
            torch.manual_seed(seed + step)
        balancer.backward(losses, [problem.theta])
        steps.append(
            Step(
                weights=[balancer.weights()[name] for name in NAMES],
                shared_grad=problem.theta.grad.detach().clone(),
                head_grads=[head.grad.detach().clone() for head in problem.heads],
                balancer_grads={
                    name: parameter.grad.detach().clone()
                    for name, parameter in balancer.named_parameters()
                    if parameter.grad is not None
                },
            )
        )
    return steps


def tensor(values: Any) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64)


def assert_close(ours: Any, theirs: Any, rtol: float, atol: float, what: str) -> float:
    """``ours`` ≈ ``theirs`` elementwise; returns max |Δ| (printed by the test, quoted in docs)."""
    ours, theirs = tensor(ours), tensor(theirs)
    difference = (ours - theirs).abs().max().item()
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")
    return difference


def tasks(make_task, likelihoods: list[Likelihood] | None = None) -> list:
    likelihoods = likelihoods or [Likelihood.REGRESSION] * TASK_COUNT
    return [
        make_task(name, likelihood) for name, likelihood in zip(NAMES, likelihoods, strict=True)
    ]


# ---------------------------------------------------------------------------------------------
# The intersection table: our balancer ↔ the LibMTL run it is compared with, and how.


@dataclass(frozen=True)
class Pair:
    """Our balancer ``ours`` with ``options`` against the LibMTL run ``run`` of the fixture.

    ``weights``: compare ``weights()`` with what LibMTL's ``backward`` returned (False where it
    returns nothing comparable: None, ones, or an intermediate of its solver).
    ``scale``: our weights and shared gradient are ``scale`` times LibMTL's (TorchJD's weights of
    Aligned-MTL and ExcessMTL sum to 1, LibMTL's to T). ``shared``: compare shared gradients.
    ``heads``: "same" — the heads get the same gradients; "weighted" — LibMTL multiplies task
    t's head gradient by the weight it returned, ours leaves the heads their ordinary gradients
    (our Jacobian balancers weigh only the shared gradients); "own": the pair's own test.
    ``identity_task_order``: TorchJD visits the tasks in ``torch.randperm`` order, LibMTL in
    ``random.shuffle`` order, which the fixture ran as the identity: so is ``randperm`` here.
    """

    ours: str
    run: str
    options: dict[str, Any] = field(default_factory=dict)
    weights: bool = True
    scale: float = 1.0
    shared: bool = True
    heads: str = "same"
    rtol: float = 1e-5
    atol: float = 1e-6
    identity_task_order: bool = False


PAIRS = [
    Pair("equal", "EW"),
    Pair("sum", "EW"),
    Pair("uncertainty", "UW", {"task_init": dict(zip(NAMES, (-0.5, 0.3, 1.2), strict=True))}),
    Pair("dwa", "DWA", {"temperature": 2.0, "period": 2}),
    Pair("gradnorm", "GradNorm", {"alpha": 1.5, "gradient_layer": "all"}, heads="own"),
    Pair("gls", "GLS", weights=False),
    Pair("imtl_l", "IMTL_scaled", weights=False, shared=False),
    Pair("imtl_g", "IMTL", rtol=1e-4),
    Pair("famo", "FAMO", {"lr": 0.025, "gamma": 1e-3}, weights=False),
    Pair("db_mtl", "DB_MTL_default", {"beta": 0.9, "beta_sigma": 0.0}, weights=False),
    Pair("db_mtl", "DB_MTL", {"beta": 0.9, "beta_sigma": 0.5}, weights=False),
    Pair("stch", "STCH", {"mu": 1.0, "warmup_steps": 6, "nadir_steps": 2}, weights=False),
    # Both find the minimum-norm point by Frank-Wolfe iterations, LibMTL's until the weights
    # change by < 1e-5, TorchJD's until a step < epsilon (1e-3 by default; 1e-7 here).
    Pair("mgda", "MGDA", {"epsilon": 1e-7, "max_iters": 10_000}, rtol=0, atol=2e-4),
    Pair("pcgrad", "PCGrad", identity_task_order=True),
    Pair("gradvac", "GradVac", {"beta": 0.5}, weights=False, identity_task_order=True),
    # Different solvers of the same problem (scipy's SLSQP, cvxpy's Clarabel): their objective
    # values agree to 1e-6, the weights that reach them to 1e-4 (the objective is flat there).
    Pair("cagrad", "CAGrad", {"c": 0.5}, weights=False, rtol=0, atol=1e-3),
    Pair("nashmtl", "Nash_MTL", {"max_norm": 1.0}, weights=False, heads="weighted", rtol=1e-4),
    Pair("aligned_mtl", "Aligned_MTL", scale=1 / TASK_COUNT),
    Pair(
        "excess_mtl",
        "ExcessMTL",
        {"robust_step_size": 0.5},
        scale=1 / TASK_COUNT,
        heads="weighted",
    ),
    Pair("fairgrad", "FairGrad", {"alpha": 1.0}, heads="weighted", rtol=1e-4, atol=1e-5),
    Pair("upgrad", "UPGrad", rtol=1e-4, atol=1e-5),
    Pair("random", "RLW", heads="weighted"),
    Pair("graddrop", "GradDrop", weights=False),
]
PAIR = {pair.ours: pair for pair in PAIRS}
"""The pair of each balancer that its own tests below use (the last one listed)."""


def test_every_balancer_is_compared_or_declared_absent_from_libmtl():
    compared = {pair.ours for pair in PAIRS}
    assert compared | NOT_IN_LIBMTL == set(BALANCERS.names())
    assert not compared & NOT_IN_LIBMTL
    assert {pair.run for pair in PAIRS} <= set(FIXTURE["runs"])


def set_gradnorm_weights(balancer: Balancer, step: int) -> None:
    """LibMTL's GradNorm weighs by ``T·softmax(loss_scale)`` from epoch 1 on, by 1 in epoch 0."""
    scales = tensor(FIXTURE["runs"]["GradNorm"]["loss_scale"])
    weights = TASK_COUNT * torch.softmax(scales, 0) if step else torch.ones(TASK_COUNT)
    with torch.no_grad():
        balancer.task_weights.copy_(weights)


def set_imtl_scales(balancer: Balancer, step: int) -> None:
    """The log-scales s_t LibMTL's IMTL run had."""
    with torch.no_grad():
        balancer.log_scales.copy_(tensor(FIXTURE["runs"]["IMTL_scaled"]["loss_scale"]))


BEFORE_STEP = {"gradnorm": set_gradnorm_weights, "imtl_l": set_imtl_scales}


def run_pair(
    pair: Pair, make_task, monkeypatch, **options: Any
) -> tuple[list[Step], list[dict[str, Any]]]:
    """Our steps of ``pair`` (``options`` override the pair's) and LibMTL's."""
    if pair.identity_task_order:
        monkeypatch.setattr(torch, "randperm", lambda count, **_: torch.arange(count))
    reference = FIXTURE["runs"][pair.run]
    balancer = create_balancer(pair.ours, tasks(make_task), **{**pair.options, **options})
    before_step = BEFORE_STEP.get(pair.ours, lambda balancer, step: None)
    ours = run_ours(balancer, seed=reference["seed"], before_step=before_step)
    return ours, reference["steps"]


@pytest.mark.parametrize("pair", PAIRS, ids=lambda pair: f"{pair.ours}-{pair.run}")
def test_update_matches_libmtl(pair, make_task, monkeypatch):
    ours, reference = run_pair(pair, make_task, monkeypatch)
    deltas = {"weights": 0.0, "shared": 0.0, "heads": 0.0}

    def compare(part: str, mine: Any, theirs: Any, where: str) -> None:
        delta = assert_close(mine, theirs, pair.rtol, pair.atol, f"{where}, {part}")
        deltas[part] = max(deltas[part], delta)

    for step in range(STEPS):
        theirs = reference[step]
        where = f"{pair.ours} vs LibMTL {pair.run}, step {step}"
        if pair.weights:
            compare("weights", ours[step].weights, pair.scale * tensor(theirs["returned"]), where)
        if pair.shared:
            compare(
                "shared", ours[step].shared_grad, pair.scale * tensor(theirs["shared_grad"]), where
            )
        if pair.heads == "own":
            continue
        for index in range(TASK_COUNT):
            mine = ours[step].head_grads[index]
            if pair.heads == "weighted":
                mine = theirs["returned"][index] * mine
            compare("heads", mine, theirs["head_grads"][index], where)
    print(f"\n{pair.ours} vs {pair.run}: max |Δ| {deltas}")


# ---------------------------------------------------------------------------------------------
# What the table leaves to a pair's own test: state, and the documented differences.


def test_uncertainty_weighs_a_classification_loss_twice_as_libmtl(make_task, monkeypatch):
    """LibMTL's UW weighs every loss as a regression, ``exp(−s)/2``; Kendall et al. (eq. 10)
    weigh a classification loss by ``exp(−s)``, as we do."""
    classification = [Likelihood.CLASSIFICATION] + [Likelihood.REGRESSION] * (TASK_COUNT - 1)
    balancer = create_balancer(
        "uncertainty", tasks(make_task, classification), **PAIR["uncertainty"].options
    )
    ours = run_ours(balancer)
    regression, reference = run_pair(PAIR["uncertainty"], make_task, monkeypatch)
    for step in range(STEPS):
        theirs = reference[step]["returned"]
        assert ours[step].weights[0] == pytest.approx(2 * theirs[0], rel=1e-6)
        assert ours[step].weights[1:] == pytest.approx(theirs[1:], rel=1e-6)
        assert_close(
            regression[step].balancer_grads["log_variances"],
            reference[step]["state"]["loss_scale_grad"],
            1e-5,
            1e-6,
            f"uncertainty step {step}: gradient of s",
        )


def test_gradnorm_weight_gradient_and_head_gradients(make_task, monkeypatch):
    """Same weights w = T·softmax(ℓ) (LibMTL's parametrisation; ours holds w itself): our
    ``∇_w L_grad`` carried through the softmax is LibMTL's ``∇_ℓ L_grad``. LibMTL gives the heads
    their unweighted gradients (its per-task backward), ours ``w_t ∇L_t`` (the gradient of
    ``Σ w_t L_t``, Chen et al. Algorithm 1). LibMTL starts in epoch 1 with L_t(0) = epoch 0's
    mean loss; we start at the first step with L_t(0) = its loss, so step 0 already gives w a
    gradient where LibMTL gives none."""
    ours, reference = run_pair(PAIR["gradnorm"], make_task, monkeypatch)
    scales = tensor(FIXTURE["runs"]["GradNorm"]["loss_scale"]).requires_grad_(True)
    weights = TASK_COUNT * torch.softmax(scales, 0)
    assert reference[0]["state"]["loss_scale_grad"] is None
    assert ours[0].balancer_grads["task_weights"].abs().sum() > 0
    for step in range(1, STEPS):
        (pulled_back,) = torch.autograd.grad(
            weights, scales, ours[step].balancer_grads["task_weights"].double(), retain_graph=True
        )
        theirs = reference[step]
        assert_close(pulled_back, theirs["state"]["loss_scale_grad"], 1e-5, 1e-5, f"step {step}")
        for index in range(TASK_COUNT):
            unweighted = ours[step].head_grads[index] / weights[index].detach()
            assert_close(unweighted, theirs["head_grads"][index], 1e-5, 1e-6, f"step {step}")


def test_gls_reports_the_derivative_where_libmtl_reports_another_number(make_task, monkeypatch):
    """Both descend the geometric mean (the gradients match, above). Our weights are its
    derivative ``∂total/∂L_t = total/(T·L_t)``, so ``Σ_t w_t g_t`` is the shared gradient;
    LibMTL returns ``L_t/(T·Π L)``, which is not (it only logs it)."""
    ours, reference = run_pair(PAIR["gls"], make_task, monkeypatch)
    for step in range(STEPS):
        gradients = tensor(INPUTS["shared_gradients"][step])
        for weights, is_derivative in (
            (ours[step].weights, True),
            (reference[step]["returned"], False),
        ):
            combined = tensor(weights) @ gradients
            matches = torch.allclose(
                combined, ours[step].shared_grad.double(), rtol=1e-5, atol=1e-6
            )
            assert matches is is_derivative


def test_imtl_l_is_libmtls_loss_scaling_without_its_gradient_aggregation(make_task, monkeypatch):
    """LibMTL's IMTL is IMTL-L and IMTL-G together; ours are two balancers. IMTL-L's part
    matches: the gradient of s, the heads' gradients e^s ∇L_t. On θ LibMTL aggregates the
    rows e^s g_t by IMTL-G where ``imtl_l`` sums them (``imtl_g`` matches LibMTL at s = 0)."""
    ours, reference = run_pair(PAIR["imtl_l"], make_task, monkeypatch)
    scales = tensor(FIXTURE["runs"]["IMTL_scaled"]["loss_scale"])
    for step in range(STEPS):
        theirs = reference[step]
        assert_close(
            ours[step].balancer_grads["log_scales"],
            theirs["state"]["loss_scale_grad"],
            1e-5,
            1e-6,
            f"step {step}",
        )
        summed = scales.exp() @ tensor(INPUTS["shared_gradients"][step])
        assert_close(ours[step].shared_grad, summed, 1e-5, 1e-6, f"step {step}")
        assert not torch.allclose(summed, tensor(theirs["shared_grad"]), rtol=1e-2)


def test_famo_logits_follow_libmtls_adam_steps(make_task, monkeypatch):
    """LibMTL's ``update_w`` after step k got step k+1's losses (the fixture's harness): our
    logits at step k+1, updated from the same two losses, are LibMTL's after its update k."""
    balancer = create_balancer("famo", tasks(make_task), **PAIR["famo"].options)
    reference = FIXTURE["runs"]["FAMO"]["steps"]
    before = []  # before[k]: the logits before step k's forward, which updates them
    run_ours(balancer, before_step=lambda balancer, step: before.append(balancer.logits.clone()))
    before.append(balancer.logits.clone())
    for step in range(STEPS - 1):
        theirs = reference[step]["state"]["logits"]
        assert_close(before[step + 2], theirs, 1e-4, 1e-7, f"logits after LibMTL's update {step}")
    assert tensor(reference[STEPS - 2]["state"]["logits"]).abs().max() > 0.1


def test_famo_plain_gradient_step_would_move_the_logits_far_less():
    """Why we take the Adam step: the plain step ``ξ ← ξ − β d`` of Algorithm 1 at LibMTL's
    β = 0.025 moves ξ a small fraction of what the authors' Adam step does on these losses."""
    values = tensor(INPUTS["values"])
    logits = torch.zeros(TASK_COUNT, dtype=torch.float64)
    for step in range(1, STEPS):
        delta = values[step - 1].log() - values[step].log()
        z = torch.softmax(logits, 0)
        logits = logits - 0.025 * (z * (delta - (z * delta).sum()) + 1e-3 * logits)
    adam = tensor(FIXTURE["runs"]["FAMO"]["steps"][STEPS - 2]["state"]["logits"])
    assert logits.abs().max() < adam.abs().max() / 20


def test_db_mtl_gradient_ema_and_scales(make_task, monkeypatch):
    """Our EMA ĝ_t of ∇θ log L_t is LibMTL's ``grad_buffer``; our weights are its scales
    ``max_i ‖ĝ_i‖ / ‖ĝ_t‖`` (LibMTL computes them and returns ones)."""
    balancer = create_balancer("db_mtl", tasks(make_task), **PAIR["db_mtl"].options)
    reference = FIXTURE["runs"]["DB_MTL"]["steps"]
    emas = []
    steps = run_ours(
        balancer, before_step=lambda balancer, step: emas.append(balancer.gradient_ema)
    )
    emas = [*emas[1:], balancer.gradient_ema]
    for step in range(STEPS):
        buffer = tensor(reference[step]["state"]["grad_buffer"])
        assert_close(emas[step], buffer, 1e-5, 1e-6, f"EMA after step {step}")
        norms = buffer.norm(dim=1)
        assert_close(steps[step].weights, norms.max() / norms, 1e-5, 1e-6, f"step {step}")


def test_stch_nadir_is_libmtls(make_task, monkeypatch):
    """LibMTL's nadir: the mean loss of epoch ``STCH_warmup_epoch`` (steps 4–5 here); ours: of
    the last ``nadir_steps`` = 2 of ``warmup_steps`` = 6 steps."""
    balancer = create_balancer("stch", tasks(make_task), **PAIR["stch"].options)
    run_ours(balancer)
    theirs = next(
        step["state"]["nadir"] for step in FIXTURE["runs"]["STCH"]["steps"] if step["state"]
    )
    assert_close(balancer.nadir, theirs, 1e-6, 0, "nadir")


def test_cagrad_default_rescale_of_libmtl_divides_by_one_plus_c_squared(make_task, monkeypatch):
    """LibMTL's default ``rescale=1`` (the CAGrad authors' code) divides the update by 1 + c²;
    TorchJD's and ours does not: the same direction, a (1 + c²) times longer step."""
    ours, _ = run_pair(PAIR["cagrad"], make_task, monkeypatch)
    rescaled = FIXTURE["runs"]["CAGrad_rescale1"]["steps"]
    for step in range(STEPS):
        expected = tensor(rescaled[step]["shared_grad"]) * (1 + 0.5**2)
        assert_close(ours[step].shared_grad, expected, 0, 1e-3, f"step {step}")


def test_nashmtl_weights_are_libmtls_after_the_norm_clip(make_task, monkeypatch):
    """LibMTL returns α and clips the shared gradients to ``max_norm``; TorchJD scales α so that
    ``‖Σ α_t g_t‖ ≤ max_norm``: the same shared gradient (above), weights α·min(1, 1/‖Σ α g‖)."""
    ours, reference = run_pair(PAIR["nashmtl"], make_task, monkeypatch)
    for step in range(STEPS):
        alpha = tensor(reference[step]["returned"])
        norm = (alpha @ tensor(INPUTS["shared_gradients"][step])).norm()
        expected = alpha * min(1.0, 1.0 / norm.item())
        assert_close(ours[step].weights, expected, 1e-4, 1e-6, f"step {step}")


def test_excess_mtl_without_a_warm_up_step_jumps_at_the_first_step(make_task, monkeypatch):
    """TorchJD's default ``n_warmup_steps=0`` moves the weights at the first step by the
    unscaled excess risks; LibMTL (and the authors' code) only records their scale then. Our
    default of one warm-up step matches LibMTL (above); TorchJD's default puts ~all the weight
    on one task."""
    ours, reference = run_pair(PAIR["excess_mtl"], make_task, monkeypatch, n_warmup_steps=0)
    assert reference[0]["returned"] == pytest.approx([1.0] * TASK_COUNT)
    assert max(ours[0].weights) > 0.99
