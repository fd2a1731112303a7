"""Every registered balancer gives the same update with and without an AMP loss scale.

The grad scaler multiplies the losses by s before ``backward`` and divides every gradient by s
before the optimiser step; a balancer must therefore write exactly ``s ×`` its unscaled
gradients. Nash-MTL did not: it weighed the scaled Jacobian, and as its weights go like 1/‖g‖
its shared update came out s times too small after unscaling.
"""

import warnings

import pytest
import torch

from densetasks.balancers import BALANCERS, create_balancer
from densetasks.balancers.aggregators import AGGREGATORS

SCALE = 1024.0
NEEDS_CVXPY = {"cagrad", "nashmtl"}


def _problem() -> tuple[list[torch.nn.Parameter], dict[str, torch.Tensor]]:
    """Shared θ (6 values) with conflicting task gradients, and seg's own head h."""
    generator = torch.Generator().manual_seed(0)
    shared = torch.nn.Parameter(torch.randn(6, generator=generator))
    head = torch.nn.Parameter(torch.tensor([0.7]))
    losses = {
        "seg": (shared[:4] * head).pow(2).sum(),
        "depth": (shared * torch.tensor([3.0, -2.0, 1.0, 0.5, -1.0, 2.0])).sum().pow(2),
    }
    return [shared, head], losses


def _gradients(name: str, tasks, scale: float) -> list[torch.Tensor]:
    """The unscaled gradients of θ, h and the balancer's own parameters after one step.

    The seed gives the random balancers (RLW's weights, GradDrop's signs, GradVac's task
    order) the same draws in both runs."""
    torch.manual_seed(0)
    parameters, losses = _problem()
    balancer = create_balancer(name, tasks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cvxpy's "problem is not DPP" for Nash-MTL
        balancer.backward(losses, parameters[:1], scale=lambda total: total * scale)
    every = [*parameters, *balancer.parameters()]
    return [parameter.grad / scale for parameter in every if parameter.grad is not None]


@pytest.mark.parametrize("name", BALANCERS.names())
def test_the_update_does_not_depend_on_the_loss_scale(two_tasks, name):
    if name in NEEDS_CVXPY:
        pytest.importorskip("cvxpy")
    plain, scaled = _gradients(name, two_tasks, 1.0), _gradients(name, two_tasks, SCALE)
    assert len(plain) == len(scaled) >= 2
    for expected, actual in zip(plain, scaled, strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=0.0)


def test_every_aggregator_is_covered():
    assert set(AGGREGATORS) <= set(BALANCERS.names())


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_an_overflowed_jacobian_is_passed_on_for_the_scaler_to_skip(two_tasks, name):
    """An fp16 overflow (inf in J) must reach ``.grad`` (the scaler then skips the step)
    instead of failing in a solver (CAGrad, Nash-MTL) or vanishing."""
    if name in NEEDS_CVXPY:
        pytest.importorskip("cvxpy")
    (shared, _head), losses = _problem()
    balancer = create_balancer(name, two_tasks)
    balancer.backward(losses, [shared], scale=lambda total: total * 3e38)
    assert not torch.isfinite(shared.grad).all()
