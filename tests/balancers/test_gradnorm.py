import pytest
import torch

from densetasks.balancers import create_balancer
from densetasks.errors import ConfigError


def _losses(shared: torch.nn.Parameter) -> dict[str, torch.Tensor]:
    """seg = θ0² (gradient (2θ0, 0)), depth = 2·θ1² (gradient (0, 4θ1))."""
    return {"seg": shared[0] ** 2, "depth": 2 * shared[1] ** 2}


def test_two_hand_computed_steps(two_tasks):
    balancer = create_balancer("gradnorm", two_tasks, alpha=1.5)
    shared = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    # Step 1: L = (1, 8) = L(0), ‖∇L‖ = (2, 8), G = (2, 8), Ḡ = 5, r = (1, 1), target (5, 5).
    balancer.backward(_losses(shared), [shared])
    assert balancer.task_weights.grad.tolist() == pytest.approx([-2.0, 8.0])
    assert shared.grad.tolist() == pytest.approx([2.0, 8.0])
    assert balancer.weights() == {"seg": 1.0, "depth": 1.0}

    with torch.no_grad():  # an SGD step with lr 0.1 on w, then a new θ
        balancer.task_weights -= 0.1 * balancer.task_weights.grad
        shared.copy_(torch.tensor([0.5, 2.0]))
    balancer.task_weights.grad = None
    shared.grad = None
    # Step 2: w = (1.2, 0.2) renormalised to sum 2 -> (12/7, 2/7). L = (0.25, 8),
    # L̃ = (0.25, 1), r = (0.4, 1.6); ‖∇L‖ = (1, 8), G = (12/7, 16/7), Ḡ = 2,
    # target = 2·r^1.5 = (0.506, 4.048); sign(G − target) = (+, −).
    balancer.backward(_losses(shared), [shared])
    weights = balancer.weights()
    assert [weights["seg"], weights["depth"]] == pytest.approx([12 / 7, 2 / 7])
    assert balancer.task_weights.grad.tolist() == pytest.approx([1.0, -8.0])
    assert shared.grad.tolist() == pytest.approx([12 / 7, 16 / 7])


def test_amp_scale_scales_every_gradient(two_tasks):
    balancer = create_balancer("gradnorm", two_tasks)
    shared = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    balancer.backward(_losses(shared), [shared], scale=lambda loss: 4.0 * loss)
    assert balancer.task_weights.grad.tolist() == pytest.approx([-8.0, 32.0])
    assert shared.grad.tolist() == pytest.approx([8.0, 32.0])


def test_gradient_layer_all_uses_every_shared_parameter(two_tasks):
    balancer = create_balancer("gradnorm", two_tasks, gradient_layer="all")
    first = torch.nn.Parameter(torch.tensor(3.0))
    last = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    # seg = θ0² + first (‖∇‖ = ‖(2, 0, 1)‖ = √5); depth = 2θ1² (‖∇‖ = 8); only "all" sees first.
    losses = {"seg": last[0] ** 2 + first, "depth": 2 * last[1] ** 2}
    balancer.backward(losses, [first, last])
    assert balancer.task_weights.grad.tolist() == pytest.approx([-(5**0.5), 8.0])
    with pytest.raises(ConfigError, match="gradient_layer"):
        create_balancer("gradnorm", two_tasks, gradient_layer="first")


def test_zero_loss_task_gets_no_weight_gradient_and_no_initial_loss(two_tasks):
    balancer = create_balancer("gradnorm", two_tasks)
    shared = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    balancer.backward({"seg": shared[0] ** 2, "depth": shared[1] * 0.0}, [shared])
    assert balancer.initial_losses.tolist() == [1.0, 0.0]
    # Only seg is active: it is its own average, G = target, |G − target| has subgradient 0.
    assert balancer.task_weights.grad.tolist() == pytest.approx([0.0, 0.0])


def test_state_dict_round_trip(two_tasks):
    source = create_balancer("gradnorm", two_tasks)
    shared = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    source.backward(_losses(shared), [shared])
    with torch.no_grad():
        source.task_weights.copy_(torch.tensor([0.5, 1.5]))
    target = create_balancer("gradnorm", two_tasks)
    target.load_state_dict(source.state_dict())
    assert target.task_weights.tolist() == [0.5, 1.5]
    assert target.initial_losses.tolist() == [1.0, 8.0]
