import math

import pytest
import torch

from densetasks.balancers import create_balancer


def test_hand_computed_value_and_gradients(two_tasks):
    """s = (0.5, −1), L = (2, 3): total = e^{0.5}·2 − 0.5 + e^{−1}·3 + 1;
    ∂/∂s_t = e^{s_t} L_t − 1, ∂/∂L_t = e^{s_t}."""
    balancer = create_balancer("imtl_l", two_tasks)
    with torch.no_grad():
        balancer.log_scales.copy_(torch.tensor([0.5, -1.0]))
    seg = torch.tensor(2.0, requires_grad=True)
    depth = torch.tensor(3.0, requires_grad=True)
    total = balancer({"seg": seg, "depth": depth})
    assert total.item() == pytest.approx(math.exp(0.5) * 2 - 0.5 + math.exp(-1) * 3 + 1)
    total.backward()
    assert balancer.log_scales.grad.tolist() == pytest.approx(
        [math.exp(0.5) * 2 - 1, math.exp(-1) * 3 - 1]
    )
    assert seg.grad.item() == pytest.approx(math.exp(0.5))
    assert depth.grad.item() == pytest.approx(math.exp(-1))
    assert balancer.weights() == pytest.approx({"seg": math.exp(0.5), "depth": math.exp(-1)})


def test_optimum_scales_each_loss_to_one(two_tasks):
    balancer = create_balancer("imtl_l", two_tasks)
    optimiser = torch.optim.SGD(balancer.parameters(), lr=0.1)
    for _ in range(500):
        optimiser.zero_grad()
        balancer({"seg": torch.tensor(4.0), "depth": torch.tensor(0.5)}).backward()
        optimiser.step()
    assert balancer.log_scales.exp().tolist() == pytest.approx([0.25, 2.0], rel=1e-3)


def test_zero_loss_task_keeps_its_scale(two_tasks):
    balancer = create_balancer("imtl_l", two_tasks)
    seg = torch.tensor(2.0, requires_grad=True)
    balancer({"seg": seg, "depth": seg * 0.0}).backward()
    assert balancer.log_scales.grad.tolist() == pytest.approx([1.0, 0.0])


def test_state_dict_round_trip(two_tasks):
    source = create_balancer("imtl_l", two_tasks)
    with torch.no_grad():
        source.log_scales.fill_(0.3)
    target = create_balancer("imtl_l", two_tasks)
    target.load_state_dict(source.state_dict())
    assert target.log_scales.tolist() == pytest.approx([0.3, 0.3])
