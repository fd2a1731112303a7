import math

import pytest
import torch

from densetasks.balancers import create_balancer
from densetasks.errors import ConfigError


def _step(balancer, seg: float, depth: float) -> float:
    return balancer({"seg": torch.tensor(seg), "depth": torch.tensor(depth)}).item()


def test_hand_computed_two_steps(two_tasks):
    balancer = create_balancer("famo", two_tasks)  # β = 0.025, γ = 0.001
    # Step 1: ξ = 0, z = (½, ½), L = (2, 8): c = ½/2 + ½/8 = 0.3125, w = z/(c L) = (0.8, 0.2).
    assert _step(balancer, 2.0, 8.0) == pytest.approx(0.8 * 2 + 0.2 * 8)
    assert balancer.weights() == pytest.approx({"seg": 0.8, "depth": 0.2})
    # Step 2, L = (1, 8): δ = (ln 2, 0), zᵀδ = ln2/2, J_zᵀδ = z ⊙ (δ − zᵀδ) = (ln2/4, −ln2/4);
    # ξ = 0 − 0.025 (J_zᵀδ + 0.001 · 0) = (−0.025 ln2/4, 0.025 ln2/4).
    _step(balancer, 1.0, 8.0)
    step = 0.025 * math.log(2) / 4
    assert balancer.logits.tolist() == pytest.approx([-step, step], rel=1e-6)
    z_seg = 1 / (1 + math.exp(2 * step))
    inverse = [z_seg / 1.0, (1 - z_seg) / 8.0]
    expected = [value / sum(inverse) for value in inverse]
    assert list(balancer.weights().values()) == pytest.approx(expected, rel=1e-6)
    # Step 3, L unchanged: δ = 0, only the weight decay acts: ξ ← ξ (1 − 0.025 · 0.001).
    _step(balancer, 1.0, 8.0)
    assert balancer.logits.tolist() == pytest.approx(
        [-step * (1 - 0.025e-3), step * (1 - 0.025e-3)], rel=1e-6
    )


def test_gradient_is_the_weighted_sum(two_tasks):
    balancer = create_balancer("famo", two_tasks)
    seg = torch.tensor(2.0, requires_grad=True)
    depth = torch.tensor(8.0, requires_grad=True)
    balancer({"seg": seg, "depth": depth}).backward()
    assert [seg.grad.item(), depth.grad.item()] == pytest.approx([0.8, 0.2])


def test_zero_loss_task_gets_weight_zero_and_no_delta(two_tasks):
    balancer = create_balancer("famo", two_tasks)
    _step(balancer, 2.0, 8.0)
    _step(balancer, 1.0, 0.0)  # δ = (ln 2, 0): the ξ of the hand-computed step
    assert balancer.weights() == pytest.approx({"seg": 1.0, "depth": 0.0})
    step = 0.025 * math.log(2) / 4
    _step(balancer, 1.0, 4.0)  # seg: δ = 0; depth: no previous loss, δ = 0; decay only
    decayed = step * (1 - 0.025e-3)
    assert balancer.logits.tolist() == pytest.approx([-decayed, decayed], rel=1e-6)


def test_evaluation_mode_does_not_update(two_tasks):
    balancer = create_balancer("famo", two_tasks).eval()
    _step(balancer, 2.0, 8.0)
    _step(balancer, 1.0, 8.0)
    assert balancer.logits.tolist() == [0.0, 0.0]


def test_state_dict_round_trip(two_tasks):
    source = create_balancer("famo", two_tasks)
    for seg in (2.0, 1.0):
        _step(source, seg, 8.0)
    target = create_balancer("famo", two_tasks)
    target.load_state_dict(source.state_dict())
    assert target.logits.tolist() == source.logits.tolist()
    assert target.previous_losses.tolist() == source.previous_losses.tolist()


def test_bad_options_are_config_errors(two_tasks):
    with pytest.raises(ConfigError, match="lr"):
        create_balancer("famo", two_tasks, lr=0.0)
    with pytest.raises(ConfigError, match="gamma"):
        create_balancer("famo", two_tasks, gamma=-1.0)
