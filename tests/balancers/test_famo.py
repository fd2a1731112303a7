import math

import pytest
import torch

from densetasks.balancers import create_balancer
from densetasks.errors import ConfigError


def _step(balancer, seg: float, depth: float) -> float:
    return balancer({"seg": torch.tensor(seg), "depth": torch.tensor(depth)}).item()


def _adam_logits(directions: list[list[float]]) -> list[float]:
    """ξ after PyTorch's Adam (lr β = 0.025, weight decay γ = 0.001, as the authors' code) took
    one step per softmax-Jacobian product ``J_zᵀδ`` in ``directions``, from ξ = 0."""
    logits = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.025, weight_decay=0.001)
    for direction in directions:
        logits.grad = torch.tensor(direction)
        optimizer.step()
    return logits.detach().tolist()


LN2_OVER_4 = math.log(2) / 4


def test_hand_computed_three_steps(two_tasks):
    balancer = create_balancer("famo", two_tasks)  # β = 0.025, γ = 0.001
    # Step 1: ξ = 0, z = (½, ½), L = (2, 8): c = ½/2 + ½/8 = 0.3125, w = z/(c L) = (0.8, 0.2).
    # No previous losses: no step on ξ.
    assert _step(balancer, 2.0, 8.0) == pytest.approx(0.8 * 2 + 0.2 * 8)
    assert balancer.weights() == pytest.approx({"seg": 0.8, "depth": 0.2})
    assert balancer.logits.tolist() == [0.0, 0.0]
    assert int(balancer.logit_steps) == 0
    # Step 2, L = (1, 8): δ = (ln 2, 0), zᵀδ = ln2/2, J_zᵀδ = z ⊙ (δ − zᵀδ) = (ln2/4, −ln2/4).
    # Adam's first step moves every logit by β against the sign of its gradient.
    _step(balancer, 1.0, 8.0)
    assert balancer.logits.tolist() == pytest.approx([-0.025, 0.025], rel=1e-6)
    assert balancer.logits.tolist() == pytest.approx(
        _adam_logits([[LN2_OVER_4, -LN2_OVER_4]]), rel=1e-6
    )
    z_seg = 1 / (1 + math.exp(0.05))
    inverse = [z_seg / 1.0, (1 - z_seg) / 8.0]
    expected = [value / sum(inverse) for value in inverse]
    assert list(balancer.weights().values()) == pytest.approx(expected, rel=1e-6)
    # Step 3, L unchanged: δ = 0, the gradient is the decay γξ alone; Adam's momentum carries ξ
    # on in the direction of step 2.
    _step(balancer, 1.0, 8.0)
    assert balancer.logits.tolist() == pytest.approx(
        _adam_logits([[LN2_OVER_4, -LN2_OVER_4], [0.0, 0.0]]), rel=1e-6
    )
    assert balancer.logits[0] < -0.025


def test_gradient_is_the_weighted_sum(two_tasks):
    balancer = create_balancer("famo", two_tasks)
    seg = torch.tensor(2.0, requires_grad=True)
    depth = torch.tensor(8.0, requires_grad=True)
    balancer({"seg": seg, "depth": depth}).backward()
    assert [seg.grad.item(), depth.grad.item()] == pytest.approx([0.8, 0.2])


def test_zero_loss_task_gets_weight_zero_and_no_delta(two_tasks):
    balancer = create_balancer("famo", two_tasks)
    _step(balancer, 2.0, 8.0)
    _step(balancer, 1.0, 0.0)  # δ = (ln 2, 0): the ξ of the hand-computed step 2
    assert balancer.weights() == pytest.approx({"seg": 1.0, "depth": 0.0})
    assert balancer.logits.tolist() == pytest.approx([-0.025, 0.025], rel=1e-6)
    _step(balancer, 1.0, 4.0)  # seg: δ = 0; depth: no previous loss, δ = 0: as step 3 above
    assert balancer.logits.tolist() == pytest.approx(
        _adam_logits([[LN2_OVER_4, -LN2_OVER_4], [0.0, 0.0]]), rel=1e-6
    )


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
    assert target.logit_moment.tolist() == source.logit_moment.tolist()
    assert target.logit_second_moment.tolist() == source.logit_second_moment.tolist()
    assert int(target.logit_steps) == int(source.logit_steps) == 1


def test_bad_options_are_config_errors(two_tasks):
    with pytest.raises(ConfigError, match="lr"):
        create_balancer("famo", two_tasks, lr=0.0)
    with pytest.raises(ConfigError, match="gamma"):
        create_balancer("famo", two_tasks, gamma=-1.0)
