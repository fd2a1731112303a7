import math

import pytest
import torch

from densetasks.balancers import create_balancer
from densetasks.errors import ConfigError
from densetasks.tasks.base import Likelihood


def test_hand_computed_value_and_gradients(two_tasks):
    """seg is a classification, depth a regression task (Kendall et al., CVPR 2018, eq. 10)."""
    balancer = create_balancer("uncertainty", two_tasks, task_init={"seg": 0.5, "depth": -1.0})
    seg = torch.tensor(2.0, requires_grad=True)
    depth = torch.tensor(3.0, requires_grad=True)
    total = balancer({"seg": seg, "depth": depth})
    # seg: exp(-0.5)·2 + 0.5·0.5 ; depth: 0.5·exp(1)·3 + 0.5·(-1)
    expected = math.exp(-0.5) * 2 + 0.25 + 0.5 * math.e * 3 - 0.5
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    s_grad = balancer.log_variances.grad.tolist()
    assert s_grad[0] == pytest.approx(-math.exp(-0.5) * 2 + 0.5, rel=1e-6)
    assert s_grad[1] == pytest.approx(-0.5 * math.e * 3 + 0.5, rel=1e-6)
    assert seg.grad.item() == pytest.approx(math.exp(-0.5), rel=1e-6)
    assert depth.grad.item() == pytest.approx(0.5 * math.e, rel=1e-6)
    weights = balancer.weights()
    assert weights["seg"] == pytest.approx(math.exp(-0.5), rel=1e-6)
    assert weights["depth"] == pytest.approx(0.5 * math.e, rel=1e-6)
    sigmas = balancer.sigmas()
    assert sigmas["seg"] == pytest.approx(math.exp(0.25), rel=1e-6)
    assert sigmas["depth"] == pytest.approx(math.exp(-0.5), rel=1e-6)


def test_init_override_for_unknown_task_is_named(two_tasks):
    with pytest.raises(ConfigError, match="edges"):
        create_balancer("uncertainty", two_tasks, task_init={"edges": 1.0})


def test_state_dict_round_trip(two_tasks):
    source = create_balancer("uncertainty", two_tasks, init=2.0)
    target = create_balancer("uncertainty", two_tasks)
    target.load_state_dict(source.state_dict())
    assert target.log_variances.tolist() == [2.0, 2.0]
    assert [name for name, _ in target.named_parameters()] == ["log_variances"]


def _learned_variances(tasks, initial_log_variance: float) -> list[float]:
    """Fit y1 = 2x + N(0, 0.25), y2 = -3x + N(0, 4) with uncertainty weighting (regression).

    With L = mean squared error, 0.5·exp(−s)·L + 0.5·s is smallest at exp(s) = L, which tends
    to the noise variance once the slopes are fitted.
    """
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1024, generator=generator)
    y1 = 2.0 * x + 0.5 * torch.randn(1024, generator=generator)
    y2 = -3.0 * x + 2.0 * torch.randn(1024, generator=generator)
    slopes = torch.nn.Parameter(torch.zeros(2))
    balancer = create_balancer("uncertainty", tasks, init=initial_log_variance)
    # A short second-moment memory (β2 = 0.9): from s = −2 the first gradients of s are ~50×
    # the late ones, and Adam's default β2 = 0.999 would remember them for ~1000 steps.
    optimizer = torch.optim.Adam([slopes, *balancer.parameters()], lr=0.05, betas=(0.9, 0.9))
    for _ in range(250):
        losses = {
            "y1": (slopes[0] * x - y1).pow(2).mean(),
            "y2": (slopes[1] * x - y2).pow(2).mean(),
        }
        optimizer.zero_grad(set_to_none=True)
        balancer.backward(losses, [])
        optimizer.step()
    return torch.exp(balancer.log_variances.detach()).tolist()


def test_learns_the_noise_variances_from_any_initialisation(make_task):
    """The learned weights do not depend on the initial s in [−2, 5] (Kendall et al., App. B)."""
    tasks = [make_task("y1", Likelihood.REGRESSION), make_task("y2", Likelihood.REGRESSION)]
    runs = [_learned_variances(tasks, initial) for initial in (-2.0, 0.0, 5.0)]
    for variance_1, variance_2 in runs:
        assert variance_1 == pytest.approx(0.25, rel=0.15)
        assert variance_2 == pytest.approx(4.0, rel=0.15)
    for run in runs[1:]:
        assert run == pytest.approx(runs[0], rel=0.03)
