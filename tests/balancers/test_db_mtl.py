"""Shared θ = (2, 3), seg's head h = 1: L_seg = θ0·h = 2, L_depth = −θ0 + θ1 = 1, so
∇θ log L_seg = (1/2, 0) and ∇θ log L_depth = (−1, 1)."""

import math

import pytest
import torch

from densetasks.balancers import create_balancer
from densetasks.errors import ConfigError


def _toy_problem():
    shared = torch.nn.Parameter(torch.tensor([2.0, 3.0]))
    head = torch.nn.Parameter(torch.tensor(1.0))
    losses = {"seg": shared[0] * head, "depth": -shared[0] + shared[1]}
    return shared, head, losses


def test_hand_computed_two_steps(two_tasks):
    balancer = create_balancer("db_mtl", two_tasks)  # β = 0.9, σ = 0.5
    shared, head, losses = _toy_problem()
    total = balancer.backward(losses, [shared])
    # Step 1: β_1 = 0.9, ĝ = 0.1 g: ĝ_seg = (0.05, 0), ĝ_depth = (−0.1, 0.1);
    # ‖ĝ‖ = (0.05, 0.1√2), α = (2√2, 1): ∇θ = 2√2 (0.05, 0) + (−0.1, 0.1) = (0.1√2 − 0.1, 0.1).
    assert total.item() == pytest.approx(math.log(2))
    assert shared.grad.tolist() == pytest.approx([0.1 * math.sqrt(2) - 0.1, 0.1], rel=1e-5)
    assert head.grad.item() == pytest.approx(1.0)  # ∂ log(θ0 h)/∂h = 1/h
    assert balancer.weights() == pytest.approx({"seg": 2 * math.sqrt(2), "depth": 1.0})
    # Step 2, same gradients: β_2 = 0.9/√2, ĝ = (β_2 · 0.1 + 1 − β_2) g, α unchanged.
    shared, _, losses = _toy_problem()
    balancer.backward(losses, [shared])
    beta = 0.9 / math.sqrt(2)
    factor = (beta * 0.1 + 1 - beta) / 0.1
    expected = [factor * (0.1 * math.sqrt(2) - 0.1), factor * 0.1]
    assert shared.grad.tolist() == pytest.approx(expected, rel=1e-5)


def test_zero_loss_task_is_left_out(two_tasks):
    balancer = create_balancer("db_mtl", two_tasks)
    shared, _, losses = _toy_problem()
    losses["seg"] = losses["seg"] * 0.0
    total = balancer.backward(losses, [shared])
    assert total.item() == pytest.approx(0.0)  # log L_depth = log 1
    assert shared.grad.tolist() == pytest.approx([-0.1, 0.1], rel=1e-5)
    assert balancer.weights() == pytest.approx({"seg": 0.0, "depth": 1.0})


def test_step_count_is_checkpointed(two_tasks):
    source = create_balancer("db_mtl", two_tasks)
    shared, _, losses = _toy_problem()
    source.backward(losses, [shared])
    target = create_balancer("db_mtl", two_tasks)
    target.load_state_dict(source.state_dict())
    assert int(target.steps) == 1


def test_bad_options_are_config_errors(two_tasks):
    with pytest.raises(ConfigError, match="beta"):
        create_balancer("db_mtl", two_tasks, beta=1.0)
    with pytest.raises(ConfigError, match="beta_sigma"):
        create_balancer("db_mtl", two_tasks, beta_sigma=-0.5)
