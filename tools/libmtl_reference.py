"""Run LibMTL's loss-weighting methods on fixed losses and gradients and write what they did to a
JSON fixture, which ``tests/balancers/test_libmtl_reference.py`` compares densetasks' balancers
with.

    python tools/libmtl_reference.py CHECKOUT --out tests/balancers/fixtures/libmtl.json

CHECKOUT is a clone of https://github.com/median-research-group/LibMTL; its weighting classes
are imported from there and run unchanged (nothing of LibMTL is copied into densetasks). They
need numpy, scipy, cvxpy + ecos and qpsolvers + quadprog, which densetasks' TorchJD extras
already bring; ``LibMTL/__init__.py`` is not run, as it imports the trainer, which needs
torch_geometric.

The problem: T = 3 tasks, shared parameters θ ∈ R^10 and a head φ_t ∈ R^4 per task, all zero.
At step k the loss of task t is ``L_t = ℓ_kt + g_ktᵀθ + h_ktᵀφ_t``: its value is ℓ_kt, its
gradient g_kt on θ and h_kt on φ_t. ℓ, g, h are drawn once from a seeded generator and written
to the fixture, so the test rebuilds the same losses without any random generator. The
parameters never move (no optimiser step): each step compares one balancer update.

A LibMTL weighting is a mixin of its model class: it reads ``task_num``, ``device``,
``rep_grad``, ``get_share_params`` ... of ``AbsArchitecture`` and ``epoch`` and
``train_loss_buffer`` set by its ``Trainer``. :class:`Harness` provides exactly those for the
problem above and plays the trainer's part: it zeroes gradients before a step, sets the epoch,
fills ``train_loss_buffer`` with each epoch's mean loss and, for FAMO, calls ``update_w``.
Per step the fixture holds what ``backward`` returned, the gradient of θ and of every φ_t, and
the state a method keeps (learned scales' gradients, FAMO's logits, DB-MTL's gradient EMA,
STCH's nadir).

Three adaptations to run LibMTL unchanged, each named in the fixture: PCGrad's and GradVac's
task order (``random.shuffle``) is made the identity, so that the test can fix TorchJD's
(``torch.randperm``) alike; ``torch.symeig``, which Aligned-MTL calls and PyTorch 2 removed,
is ``torch.linalg.eigh`` (the same eigenvalues in ascending order; Aligned-MTL's B does not
depend on the eigenvectors' signs); FAMO's "losses after the step" are the next step's losses
(densetasks takes them from the next training step, see ``densetasks/balancers/famo.py``).
"""

import argparse
import contextlib
import importlib
import json
import random
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

TASKS = 3
STEPS = 10
SHARED_SIZE = 10
HEAD_SIZE = 4
SEED = 0


@dataclass(frozen=True)
class Inputs:
    """ℓ [steps, T], g [steps, T, n] and h [steps, T, m] of the fixed problem (float64)."""

    values: torch.Tensor
    shared_gradients: torch.Tensor
    head_gradients: torch.Tensor

    def as_json(self) -> dict[str, Any]:
        return {
            "loss": "L_t = values[k][t] + shared_gradients[k][t] · θ + head_gradients[k][t] · φ_t"
            " at θ = 0, φ_t = 0",
            "values": self.values.tolist(),
            "shared_gradients": self.shared_gradients.tolist(),
            "head_gradients": self.head_gradients.tolist(),
        }


def make_inputs(seed: int = SEED) -> Inputs:
    """Losses of different scales falling at different rates, gradients of different norms."""
    generator = torch.Generator().manual_seed(seed)
    steps = torch.arange(STEPS, dtype=torch.float64)[:, None]
    scale = torch.tensor([1.0, 0.05, 3.0], dtype=torch.float64)
    rate = torch.tensor([0.05, 0.02, 0.1], dtype=torch.float64)
    noise = 0.05 * torch.randn(STEPS, TASKS, generator=generator, dtype=torch.float64)
    values = scale * torch.exp(-rate * steps + noise)
    gradient_norm = torch.tensor([1.0, 4.0, 0.3], dtype=torch.float64)[None, :, None]
    shared = gradient_norm * torch.randn(
        STEPS, TASKS, SHARED_SIZE, generator=generator, dtype=torch.float64
    )
    heads = torch.randn(STEPS, TASKS, HEAD_SIZE, generator=generator, dtype=torch.float64)
    return Inputs(values, shared, heads)


class Encoder(nn.Module):
    """θ; its "representation" is θ + 1 (a batch of one, positive for GradDrop's input sign)."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(SHARED_SIZE))

    def forward(self) -> torch.Tensor:
        return (self.theta + 1).unsqueeze(0)


class Harness(nn.Module):
    """The attributes of LibMTL's ``AbsArchitecture`` and ``Trainer`` a weighting reads."""

    def __init__(self, rep_grad: bool) -> None:
        super().__init__()
        self.task_name = [f"task{index}" for index in range(TASKS)]
        self.task_num = TASKS
        self.device = torch.device("cpu")
        self.rep_grad = rep_grad
        self.encoder = Encoder()
        self.heads = nn.ParameterList([nn.Parameter(torch.zeros(HEAD_SIZE)) for _ in range(TASKS)])
        self.epoch = 0
        self.epochs = 0
        self.train_loss_buffer = np.zeros((TASKS, 0))

    def get_share_params(self) -> Iterator[nn.Parameter]:
        return self.encoder.parameters()

    def zero_grad_share_params(self) -> None:
        self.encoder.zero_grad(set_to_none=False)

    def losses(self, inputs: Inputs, step: int) -> torch.Tensor:
        """The T losses of ``step`` as one vector; with ``rep_grad`` each task reads its own
        detached copy of the representation, as ``AbsArchitecture._prepare_rep`` does."""
        dtype = torch.get_default_dtype()
        representation = self.encoder()
        if self.rep_grad:
            self.rep, self.rep_tasks = representation, {}
        losses = []
        for index, task in enumerate(self.task_name):
            task_representation = representation
            if self.rep_grad:
                task_representation = representation.detach().clone().requires_grad_(True)
                self.rep_tasks[task] = task_representation
            value = inputs.values[step, index].to(dtype)
            shared = inputs.shared_gradients[step, index].to(dtype)
            head = inputs.head_gradients[step, index].to(dtype)
            losses.append(value + shared @ (task_representation[0] - 1) + head @ self.heads[index])
        return torch.stack(losses)


@dataclass(frozen=True)
class Run:
    """One LibMTL weighting run: its class, ``backward`` keywords and the trainer's schedule."""

    name: str
    weighting: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: tuple[int, ...] = (0,) * STEPS
    """The epoch of every step (DWA, GradNorm and STCH act on epochs)."""
    loss_scale: tuple[float, ...] | None = None
    """Values set in the weighting's ``loss_scale`` parameter after ``init_param``."""
    dtype: str = "float64"
    seed: int | None = None
    """``torch.manual_seed(seed + step)`` before each step's ``backward`` (random weightings)."""
    rep_grad: bool = False
    note: str = ""


_TWO_STEP_EPOCHS = tuple(step // 2 for step in range(STEPS))

RUNS = (
    Run("EW", "EW"),
    Run("UW", "UW", loss_scale=(-0.5, 0.3, 1.2)),
    Run("DWA", "DWA", {"T": 2.0}, epochs=_TWO_STEP_EPOCHS),
    Run(
        "GradNorm",
        "GradNorm",
        {"alpha": 1.5},
        epochs=(0,) + (1,) * (STEPS - 1),
        loss_scale=(0.2, -0.1, 0.4),
        note="epoch 0 is one step, so LibMTL's L_t(0) (epoch 0's mean loss) is step 0's loss",
    ),
    Run("GLS", "GLS"),
    Run("IMTL", "IMTL"),
    Run("IMTL_scaled", "IMTL", loss_scale=(0.3, -0.2, 0.5)),
    Run(
        "FAMO",
        "FAMO",
        {"FAMO_w_lr": 0.025, "FAMO_w_gamma": 1e-3},
        note="update_w gets the next step's losses",
    ),
    Run("DB_MTL", "DB_MTL", {"DB_beta": 0.9, "DB_beta_sigma": 0.5}),
    Run(
        "DB_MTL_default", "DB_MTL", {"DB_beta": 0.9, "DB_beta_sigma": 0.0}, note="LibMTL's defaults"
    ),
    Run("STCH", "STCH", {"STCH_mu": 1.0, "STCH_warmup_epoch": 2}, epochs=_TWO_STEP_EPOCHS),
    Run("MGDA", "MGDA", {"mgda_gn": "none"}),
    Run("PCGrad", "PCGrad", note="task order: identity (random.shuffle made a no-op)"),
    Run(
        "GradVac",
        "GradVac",
        {"GradVac_beta": 0.5, "GradVac_group_type": 0},
        note="task order: identity (random.shuffle made a no-op)",
    ),
    Run("CAGrad", "CAGrad", {"calpha": 0.5, "rescale": 0}),
    Run("CAGrad_rescale1", "CAGrad", {"calpha": 0.5, "rescale": 1}),
    Run("Nash_MTL", "Nash_MTL", {"update_weights_every": 1, "optim_niter": 20, "max_norm": 1.0}),
    Run("Aligned_MTL", "Aligned_MTL", note="torch.symeig is torch.linalg.eigh"),
    Run("ExcessMTL", "ExcessMTL", {"robust_step_size": 0.5}),
    Run("FairGrad", "FairGrad", {"FairGrad_alpha": 1.0}),
    Run("UPGrad", "UPGrad", {"UPGrad_norm_eps": 1e-4, "UPGrad_reg_eps": 1e-4}),
    Run("RLW", "RLW", dtype="float32", seed=100),
    Run("GradDrop", "GradDrop", {"leak": 0.0}, dtype="float32", seed=200, rep_grad=True),
)


def import_weighting(checkout: Path) -> types.ModuleType:
    """``LibMTL.weighting`` from ``checkout`` without running ``LibMTL/__init__.py``."""
    package_dir = checkout / "LibMTL"
    if not (package_dir / "weighting" / "__init__.py").is_file():
        raise SystemExit(f"{checkout} is not a LibMTL checkout: no LibMTL/weighting/__init__.py")
    package = types.ModuleType("LibMTL")
    package.__path__ = [str(package_dir)]
    sys.modules["LibMTL"] = package
    return importlib.import_module("LibMTL.weighting")


@contextlib.contextmanager
def adapted(run: Run) -> Iterator[None]:
    """The default dtype of ``run`` and the adaptations named in the module docstring."""
    previous_dtype = torch.get_default_dtype()
    previous_shuffle = random.shuffle
    torch.set_default_dtype(getattr(torch, run.dtype))
    random.shuffle = lambda items: None
    torch.symeig = lambda matrix, eigenvectors=False: torch.linalg.eigh(matrix)
    try:
        yield
    finally:
        torch.set_default_dtype(previous_dtype)
        random.shuffle = previous_shuffle
        del torch.symeig


def _as_list(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.detach().double().tolist()
    return np.asarray(value, dtype=np.float64).tolist()


def _state(model: nn.Module) -> dict[str, Any]:
    """What a weighting keeps between steps or learns, where it has it."""
    state: dict[str, Any] = {}
    loss_scale = getattr(model, "loss_scale", None)
    if isinstance(loss_scale, nn.Parameter):
        state["loss_scale_grad"] = _as_list(loss_scale.grad)
    if isinstance(getattr(model, "w", None), torch.Tensor):
        state["logits"] = _as_list(model.w)
    if getattr(model, "grad_buffer", None) is not None:
        state["grad_buffer"] = _as_list(model.grad_buffer)
    if getattr(model, "nadir_vector", None) is not None:
        state["nadir"] = _as_list(model.nadir_vector)
    return state


def run_weighting(weighting: types.ModuleType, run: Run, inputs: Inputs) -> dict[str, Any]:
    """Every step of ``run`` on ``inputs``: returned weights, gradients and state."""
    with adapted(run):
        model_class = type("Model", (Harness, getattr(weighting, run.weighting)), {})
        model = model_class(run.rep_grad)
        model.init_param()
        model.epochs = max(run.epochs) + 1
        model.train_loss_buffer = np.zeros((TASKS, model.epochs))
        if run.loss_scale is not None:
            model.loss_scale.data.copy_(torch.tensor(run.loss_scale))
        steps = []
        for step, epoch in enumerate(run.epochs):
            model.epoch = epoch
            model.zero_grad(set_to_none=False)
            losses = model.losses(inputs, step)
            if run.seed is not None:
                torch.manual_seed(run.seed + step)
            returned = model.backward(losses, **run.kwargs)
            if run.weighting == "FAMO" and step + 1 < len(run.epochs):
                model.update_w(inputs.values[step + 1])  # the trainer's call after its step
            steps.append(
                {
                    "returned": _as_list(returned),
                    "shared_grad": _as_list(model.encoder.theta.grad),
                    "head_grads": [_as_list(head.grad) for head in model.heads],
                    "state": _state(model),
                }
            )
            last_of_epoch = step + 1 == len(run.epochs) or run.epochs[step + 1] != epoch
            if last_of_epoch:
                in_epoch = [k for k, e in enumerate(run.epochs) if e == epoch]
                model.train_loss_buffer[:, epoch] = inputs.values[in_epoch].mean(0).numpy()
    return {
        "weighting": run.weighting,
        "kwargs": run.kwargs,
        "epochs": list(run.epochs),
        "loss_scale": None if run.loss_scale is None else list(run.loss_scale),
        "dtype": run.dtype,
        "seed": run.seed,
        "rep_grad": run.rep_grad,
        "note": run.note,
        "steps": steps,
    }


_NUMBER_LIST = re.compile(r"\[\s*(-?[0-9][-+.eE0-9]*(?:,\s*-?[0-9][-+.eE0-9]*)*)\s*\]")


def to_json(fixture: dict[str, Any]) -> str:
    """``fixture`` as JSON with each list of numbers on one line (floats keep every digit)."""

    def one_line(match: re.Match[str]) -> str:
        return "[" + ", ".join(number.strip() for number in match[1].split(",")) + "]"

    return _NUMBER_LIST.sub(one_line, json.dumps(fixture, indent=1, ensure_ascii=False)) + "\n"


def checkout_commit(checkout: Path) -> str:
    result = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"cannot read the commit of {checkout} (git rev-parse): pass --commit")
    return result.stdout.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="a clone of LibMTL")
    parser.add_argument("--out", type=Path, required=True, help="the JSON fixture to write")
    parser.add_argument("--commit", help="LibMTL's commit, where CHECKOUT is not a git clone")
    arguments = parser.parse_args(argv)
    checkout = arguments.checkout.resolve()
    commit = arguments.commit or checkout_commit(checkout)
    weighting = import_weighting(checkout)
    inputs = make_inputs()
    runs = {}
    for run in RUNS:
        runs[run.name] = run_weighting(weighting, run, inputs)
        print(f"{run.name}: {len(runs[run.name]['steps'])} steps")
    fixture = {
        "libmtl": {
            "repository": "https://github.com/median-research-group/LibMTL",
            "commit": commit,
        },
        "torch": torch.__version__,
        "numpy": np.__version__,
        "command": "python tools/libmtl_reference.py CHECKOUT --out " + str(arguments.out),
        "inputs": inputs.as_json(),
        "runs": runs,
    }
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = arguments.out.with_suffix(".tmp")
    temporary.write_text(to_json(fixture), encoding="utf-8")
    temporary.replace(arguments.out)
    print(f"wrote {arguments.out} (LibMTL {commit})")


if __name__ == "__main__":
    main()
