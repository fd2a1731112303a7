import math

import pytest
import torch

from densetasks.balancers import create_balancer
from densetasks.errors import ConfigError


def _step(balancer, seg: float, depth: float) -> dict[str, float]:
    balancer({"seg": torch.tensor(seg), "depth": torch.tensor(depth)})
    return balancer.weights()


def test_hand_computed_weights_after_two_periods(two_tasks):
    balancer = create_balancer("dwa", two_tasks, period=2)  # τ = 2
    # Period 1: seg mean 3, depth mean 1. Period 2: seg mean 1.5, depth mean 1 (the zero loss
    # is a batch without depth labels and is not averaged in). Weights are 1 meanwhile.
    for seg, depth in [(2.0, 1.0), (4.0, 1.0), (1.5, 1.0), (1.5, 0.0)]:
        assert _step(balancer, seg, depth) == {"seg": 1.0, "depth": 1.0}
    weights = _step(balancer, 1.0, 1.0)
    # r = (1.5/3, 1/1) = (0.5, 1); w = 2·softmax(r/2)
    expected_seg = 2 * math.exp(0.25) / (math.exp(0.25) + math.exp(0.5))
    assert weights["seg"] == pytest.approx(expected_seg, rel=1e-6)
    assert weights["depth"] == pytest.approx(2 - expected_seg, rel=1e-6)


def test_total_uses_the_period_weights(two_tasks):
    balancer = create_balancer("dwa", two_tasks, period=1)
    for seg in (4.0, 2.0):
        _step(balancer, seg, 1.0)
    total = balancer({"seg": torch.tensor(3.0), "depth": torch.tensor(5.0)})
    weights = balancer.weights()
    assert total.item() == pytest.approx(3 * weights["seg"] + 5 * weights["depth"], rel=1e-6)
    assert weights["seg"] < 1 < weights["depth"]  # seg's loss halved, depth's stood still


def test_a_task_never_supervised_in_a_period_gets_ratio_one(two_tasks):
    balancer = create_balancer("dwa", two_tasks, period=1)
    for seg in (1.0, 1.0, 1.0):
        weights = _step(balancer, seg, 0.0)
    assert weights == pytest.approx({"seg": 1.0, "depth": 1.0})


def test_evaluation_mode_does_not_record(two_tasks):
    balancer = create_balancer("dwa", two_tasks, period=1).eval()
    _step(balancer, 1.0, 1.0)
    assert int(balancer.completed_periods) == 0


def test_state_dict_round_trip(two_tasks):
    source = create_balancer("dwa", two_tasks, period=1)
    for seg in (4.0, 2.0):
        _step(source, seg, 1.0)
    target = create_balancer("dwa", two_tasks, period=1)
    target.load_state_dict(source.state_dict())
    assert target.current_weights().tolist() == source.current_weights().tolist()


def test_bad_options_are_config_errors(two_tasks):
    with pytest.raises(ConfigError, match="period"):
        create_balancer("dwa", two_tasks, period=0)
    with pytest.raises(ConfigError, match="temperature"):
        create_balancer("dwa", two_tasks, temperature=0.0)
