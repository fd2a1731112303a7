"""Shared θ = (θ0, θ1) with conflicting task gradients g_seg = (1, 0), g_depth = (−1, 1)."""

import pytest
import torch

from densetasks.balancers import create_balancer
from densetasks.balancers.aggregators import build_aggregator
from densetasks.errors import ConfigError


def _toy_problem():
    shared = torch.nn.Parameter(torch.tensor([2.0, 3.0]))
    head = torch.nn.Parameter(torch.tensor(1.0))  # seg's own parameter
    losses = {"seg": shared[0] * head, "depth": -shared[0] + shared[1]}
    return shared, head, losses


# By hand for g1 = (1, 0), g2 = (−1, 1), g1·g2 = −1:
# PCGrad: g1 − (g1·g2/‖g2‖²) g2 = (0.5, 0.5), g2 − (g1·g2/‖g1‖²) g1 = (0, 1); summed (0.5, 1.5).
# UPGrad: the same projections onto the dual cone of {g1, g2}, averaged: (0.25, 0.75).
# MGDA: min over λ of ‖λ g1 + (1−λ) g2‖² = (2λ−1)² + (1−λ)² at λ = 0.6: (0.2, 0.4).
@pytest.mark.parametrize(
    ("name", "expected", "expected_weights"),
    [
        ("pcgrad", [0.5, 1.5], None),
        ("upgrad", [0.25, 0.75], None),
        ("mgda", [0.2, 0.4], [0.6, 0.4]),
    ],
)
def test_shared_gradient_is_the_aggregation(two_tasks, name, expected, expected_weights):
    shared, head, losses = _toy_problem()
    balancer = create_balancer(name, two_tasks)
    total = balancer.backward(losses, [shared])
    assert shared.grad.tolist() == pytest.approx(expected, abs=1e-3)
    assert head.grad.item() == pytest.approx(2.0)  # ∂(θ0·h)/∂h, untouched by aggregation
    assert total.item() == pytest.approx(2.0 + 1.0)
    weights = balancer.weights()
    implied = weights["seg"] * torch.tensor([1.0, 0.0]) + weights["depth"] * torch.tensor(
        [-1.0, 1.0]
    )
    assert implied.tolist() == pytest.approx(expected, abs=1e-3)
    if expected_weights is not None:
        assert [weights["seg"], weights["depth"]] == pytest.approx(expected_weights, abs=1e-3)


def test_amp_scale_scales_the_losses(two_tasks):
    shared, head, losses = _toy_problem()
    balancer = create_balancer("pcgrad", two_tasks)
    balancer.backward(losses, [shared], scale=lambda loss: 8.0 * loss)
    assert shared.grad.tolist() == pytest.approx([4.0, 12.0], abs=1e-3)
    assert head.grad.item() == pytest.approx(16.0)


def test_gradients_accumulate_onto_existing_ones(two_tasks):
    shared, _head, losses = _toy_problem()
    shared.grad = torch.tensor([1.0, 1.0])
    create_balancer("upgrad", two_tasks).backward(losses, [shared])
    assert shared.grad.tolist() == pytest.approx([1.25, 1.75], abs=1e-3)


def test_zero_loss_task_is_left_out(two_tasks):
    """MGDA would return the zero row as the minimum-norm point and stop all shared updates."""
    shared = torch.nn.Parameter(torch.tensor([2.0, 3.0]))
    losses = {"seg": shared[0] * 0.0, "depth": -shared[0] + shared[1]}
    balancer = create_balancer("mgda", two_tasks)
    balancer.backward(losses, [shared])
    assert shared.grad.tolist() == pytest.approx([-1.0, 1.0], abs=1e-4)
    assert balancer.weights()["seg"] == 0.0


def test_unknown_option_is_a_config_error(two_tasks):
    with pytest.raises(ConfigError, match="upgrad"):
        create_balancer("upgrad", two_tasks, c=0.5)


@pytest.mark.parametrize("name", ["cagrad", "nashmtl"])
def test_cvxpy_aggregators_match_torchjd(two_tasks, name):
    pytest.importorskip("cvxpy")
    shared, _, losses = _toy_problem()
    create_balancer(name, two_tasks).backward(losses, [shared])
    reference = build_aggregator(name, 2)(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    assert shared.grad.tolist() == pytest.approx(reference.tolist(), abs=1e-3)


# By hand for g1 = (1, 0), g2 = (−1, 1): mean (0, 0.5) and sum (0, 1); DualProj's mean already
# has (0, 0.5)·g1 = 0 and ·g2 = 0.5 ≥ 0, so stays. IMTL-G: d = a g1 + b g2, a + b = 1, equal
# projections d·g1/‖g1‖ = d·g2/‖g2‖ give a = √2 b: b = √2 − 1, d = (3 − 2√2, √2 − 1).
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mean", [0.0, 0.5]),
        ("sum", [0.0, 1.0]),
        ("dualproj", [0.0, 0.5]),
        ("imtl_g", [3 - 2 * 2**0.5, 2**0.5 - 1]),
    ],
)
def test_new_aggregators_by_hand(two_tasks, name, expected):
    shared, _, losses = _toy_problem()
    create_balancer(name, two_tasks).backward(losses, [shared])
    assert shared.grad.tolist() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    "name",
    ["aligned_mtl", "config", "excess_mtl", "fairgrad", "graddrop", "gradvac", "pcd", "random"],
)
def test_every_other_aggregator_is_torchjds_and_its_weights_reproduce_it(two_tasks, name):
    """Same draws (seed) as TorchJD's own aggregator; ``wᵀJ`` is the update, also for the
    aggregators that do not weigh rows (GradDrop, ConFIG: least-squares weights)."""
    shared, _, losses = _toy_problem()
    torch.manual_seed(0)
    balancer = create_balancer(name, two_tasks)
    balancer.backward(losses, [shared])
    torch.manual_seed(0)
    reference = build_aggregator(name, 2)(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    assert shared.grad.tolist() == pytest.approx(reference.tolist(), abs=1e-4)
    weights = balancer.weights()
    implied = weights["seg"] * torch.tensor([1.0, 0.0]) + weights["depth"] * torch.tensor(
        [-1.0, 1.0]
    )
    assert implied.tolist() == pytest.approx(reference.tolist(), abs=1e-4)
