import pytest
import torch

from densetasks.balancers import create_balancer


def test_hand_computed_value_and_gradients(two_tasks):
    """L = (2, 8): total = √16 = 4; ∂total/∂L_t = total / (2 L_t) = (1, 0.25)."""
    balancer = create_balancer("gls", two_tasks)
    seg = torch.tensor(2.0, requires_grad=True)
    depth = torch.tensor(8.0, requires_grad=True)
    total = balancer({"seg": seg, "depth": depth})
    assert total.item() == pytest.approx(4.0)
    total.backward()
    assert seg.grad.item() == pytest.approx(1.0)
    assert depth.grad.item() == pytest.approx(0.25)
    assert balancer.weights() == pytest.approx({"seg": 1.0, "depth": 0.25})


def test_zero_loss_task_is_left_out(two_tasks):
    balancer = create_balancer("gls", two_tasks)
    seg = torch.tensor(3.0, requires_grad=True)
    total = balancer({"seg": seg, "depth": seg * 0.0})
    assert total.item() == pytest.approx(3.0)
    total.backward()
    assert seg.grad.item() == pytest.approx(1.0)
    assert balancer.weights() == pytest.approx({"seg": 1.0, "depth": 0.0})
