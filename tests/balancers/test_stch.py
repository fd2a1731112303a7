import math

import pytest
import torch

from densetasks.balancers import create_balancer
from densetasks.errors import ConfigError


def _step(balancer, seg: float, depth: float) -> float:
    return balancer({"seg": torch.tensor(seg), "depth": torch.tensor(depth)}).item()


def test_hand_computed_warm_up_and_step(two_tasks):
    balancer = create_balancer("stch", two_tasks, warmup_steps=2, nadir_steps=1)  # μ = 1
    assert _step(balancer, 2.0, 8.0) == pytest.approx(math.log(2) + math.log(8))
    assert balancer.weights() == pytest.approx({"seg": 0.5, "depth": 0.125})
    _step(balancer, 4.0, 2.0)  # the last warm-up step: nadir n = (4, 2)
    assert balancer.nadir.tolist() == [4.0, 2.0]
    # L = (2, 4): f = (log ½, log 2); total = 2 log(½ + 2) = 2 log 2.5;
    # ∂/∂L_t = 2 softmax(f)_t / L_t = (2 · 0.2 / 2, 2 · 0.8 / 4) = (0.2, 0.4).
    seg = torch.tensor(2.0, requires_grad=True)
    depth = torch.tensor(4.0, requires_grad=True)
    total = balancer({"seg": seg, "depth": depth})
    assert total.item() == pytest.approx(2 * math.log(2.5))
    total.backward()
    assert [seg.grad.item(), depth.grad.item()] == pytest.approx([0.2, 0.4])
    assert balancer.weights() == pytest.approx({"seg": 0.2, "depth": 0.4})


def test_zero_losses_are_left_out_of_step_and_nadir(two_tasks):
    balancer = create_balancer("stch", two_tasks, warmup_steps=2, nadir_steps=2)
    _step(balancer, 2.0, 0.0)
    _step(balancer, 4.0, 0.0)
    assert balancer.nadir[0].item() == 3.0 and math.isnan(balancer.nadir[1].item())
    # depth's reference is 1; seg alone: total = 2 log(L/3)
    assert _step(balancer, 6.0, 0.0) == pytest.approx(2 * math.log(2))
    assert balancer.weights()["depth"] == 0.0


def test_evaluation_mode_does_not_count(two_tasks):
    balancer = create_balancer("stch", two_tasks, warmup_steps=2, nadir_steps=1).eval()
    _step(balancer, 2.0, 8.0)
    assert int(balancer.steps) == 0


def test_state_dict_round_trip(two_tasks):
    source = create_balancer("stch", two_tasks, warmup_steps=1, nadir_steps=1)
    _step(source, 2.0, 8.0)
    target = create_balancer("stch", two_tasks, warmup_steps=1, nadir_steps=1)
    target.load_state_dict(source.state_dict())
    assert target.nadir.tolist() == [2.0, 8.0] and int(target.steps) == 1


def test_bad_options_are_config_errors(two_tasks):
    with pytest.raises(ConfigError, match="mu"):
        create_balancer("stch", two_tasks, mu=0.0)
    with pytest.raises(ConfigError, match="nadir_steps"):
        create_balancer("stch", two_tasks, warmup_steps=10, nadir_steps=20)
