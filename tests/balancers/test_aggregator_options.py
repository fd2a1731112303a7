"""Tensor-valued aggregator options (``pref_vector``, ``leak``, PCD's ``tau``) from YAML lists.

Toy problem of test_aggregators.py: shared θ with task gradients g_seg = (1, 0) and
g_depth = (−1, 1).
"""

import importlib

import pytest
import torch

from densetasks.balancers import create_balancer
from densetasks.balancers.aggregators import AGGREGATORS, build_aggregator, tensor_options
from densetasks.errors import ConfigError
from densetasks.tasks.base import Likelihood


def _toy_problem():
    shared = torch.nn.Parameter(torch.tensor([2.0, 3.0]))
    head = torch.nn.Parameter(torch.tensor(1.0))
    losses = {"seg": shared[0] * head, "depth": -shared[0] + shared[1]}
    return shared, losses


def _vector_options() -> list[tuple[str, str]]:
    torchjd = importlib.import_module("torchjd.aggregation")
    return [
        (name, option)
        for name, class_name in AGGREGATORS.items()
        for option in tensor_options(getattr(torchjd, class_name))
    ]


def test_the_tensor_options_are_found_from_the_signatures():
    assert set(_vector_options()) == {
        ("upgrad", "pref_vector"),
        ("aligned_mtl", "pref_vector"),
        ("config", "pref_vector"),
        ("dualproj", "pref_vector"),
        ("graddrop", "leak"),
        ("pcd", "tau"),
    }


@pytest.mark.parametrize(("name", "option"), _vector_options())
def test_a_list_becomes_a_float_vector(two_tasks, name, option):
    length = 1 if (name, option) == ("pcd", "tau") else 2  # PCD: one τ per secondary task
    balancer = create_balancer(name, two_tasks, **{option: [0.5] * length})
    value = getattr(balancer.aggregator, option)
    assert isinstance(value, torch.Tensor)
    assert value.dtype == torch.float32
    assert value.tolist() == [0.5] * length
    shared, losses = _toy_problem()
    balancer.backward(losses, [shared])
    assert torch.isfinite(shared.grad).all()


def test_pref_vector_weighs_the_projected_rows(two_tasks):
    """UPGrad's projections of g_seg and g_depth onto the dual cone are (0.5, 0.5) and (0, 1);
    weighted 0.8 : 0.2 they give (0.4, 0.6)."""
    shared, losses = _toy_problem()
    create_balancer("upgrad", two_tasks, pref_vector=[0.8, 0.2]).backward(losses, [shared])
    assert shared.grad.tolist() == pytest.approx([0.4, 0.6], abs=1e-4)


def test_full_leak_lets_every_row_through(two_tasks):
    """GradDrop with leak 1 for every task drops nothing: the sum (0, 1) of the rows."""
    shared, losses = _toy_problem()
    create_balancer("graddrop", two_tasks, leak=[1.0, 1.0]).backward(losses, [shared])
    assert shared.grad.tolist() == pytest.approx([0.0, 1.0], abs=1e-6)


def test_a_float_stays_a_float_where_the_option_takes_both(two_tasks):
    assert create_balancer("pcd", two_tasks, tau=0.1).aggregator.tau == 0.1


@pytest.mark.parametrize(
    ("name", "option", "value", "message"),
    [
        ("upgrad", "pref_vector", [1.0, 2.0, 3.0], "pref_vector.*one number per task: 2"),
        ("dualproj", "pref_vector", [[0.5, 0.5]], "pref_vector"),
        ("graddrop", "leak", [0.1], "leak.*one number per task: 2"),
        ("pcd", "tau", [0.1, 0.1], "tau.*secondary task.*1 for 2 tasks"),
        ("config", "pref_vector", ["a", "b"], "pref_vector.*list of numbers"),
    ],
)
def test_a_wrong_vector_is_a_config_error_naming_the_key(two_tasks, name, option, value, message):
    with pytest.raises(ConfigError, match=message):
        create_balancer(name, two_tasks, **{option: value})


def test_a_left_out_task_loses_its_entry_for_that_step(make_task):
    """Three tasks, pref_vector (0.2, 0.3, 0.5); a step where the second has a zero loss is
    UPGrad over the other two rows with (0.2, 0.5); the next full step uses all three again."""
    tasks = [make_task(name, Likelihood.REGRESSION) for name in ("a", "b", "c")]
    balancer = create_balancer("upgrad", tasks, pref_vector=[0.2, 0.3, 0.5])
    shared = torch.nn.Parameter(torch.tensor([2.0, 3.0]))
    losses = {"a": shared[0], "b": shared.sum() * 0.0, "c": -shared[0] + shared[1]}
    balancer.backward(losses, [shared])
    jacobian = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    reference = build_aggregator("upgrad", 2, pref_vector=[0.2, 0.5])(jacobian)
    assert shared.grad.tolist() == pytest.approx(reference.tolist(), abs=1e-4)
    assert balancer.weights()["b"] == 0.0

    shared.grad = None
    losses = {"a": shared[0], "b": shared[1], "c": -shared[0] + shared[1]}
    balancer.backward(losses, [shared])
    jacobian = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0]])
    reference = build_aggregator("upgrad", 3, pref_vector=[0.2, 0.3, 0.5])(jacobian)
    assert shared.grad.tolist() == pytest.approx(reference.tolist(), abs=1e-4)


def test_pcd_tau_follows_the_secondary_tasks_that_are_kept(make_task):
    """τ = (0.1, 0.9) for the secondary tasks b and c; with b left out, c keeps its 0.9."""
    tasks = [make_task(name, Likelihood.REGRESSION) for name in ("a", "b", "c")]
    balancer = create_balancer("pcd", tasks, tau=[0.1, 0.9])
    shared = torch.nn.Parameter(torch.tensor([2.0, 3.0]))
    losses = {"a": shared[0], "b": shared.sum() * 0.0, "c": -shared[0] + shared[1]}
    balancer.backward(losses, [shared])
    jacobian = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    reference = build_aggregator("pcd", 2, tau=[0.9])(jacobian)
    assert shared.grad.tolist() == pytest.approx(reference.tolist(), abs=1e-4)
    assert shared.grad.tolist() != pytest.approx(
        build_aggregator("pcd", 2, tau=[0.1])(jacobian).tolist(), abs=1e-4
    )
