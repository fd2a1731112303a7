import pytest
import torch

from densetasks.balancers import BALANCERS, create_balancer
from densetasks.errors import ConfigError


def test_fixed_weights_total_and_gradients(two_tasks):
    balancer = create_balancer("fixed", two_tasks, weights={"seg": 3.0})
    seg = torch.tensor(2.0, requires_grad=True)
    depth = torch.tensor(5.0, requires_grad=True)
    total = balancer({"seg": seg, "depth": depth})
    assert total.item() == pytest.approx(3 * 2 + 1 * 5)
    assert balancer.weights() == {"seg": 3.0, "depth": 1.0}
    total.backward()
    assert seg.grad.item() == 3.0 and depth.grad.item() == 1.0


def test_equal_is_the_plain_sum(two_tasks):
    balancer = create_balancer("equal", two_tasks)
    total = balancer({"seg": torch.tensor(0.25), "depth": torch.tensor(4.0)})
    assert total.item() == pytest.approx(4.25)
    assert balancer.last_weights == {"seg": 1.0, "depth": 1.0}


def test_weight_for_unknown_task_names_it(two_tasks):
    with pytest.raises(ConfigError, match="normals"):
        create_balancer("fixed", two_tasks, weights={"normals": 2.0})


def test_unknown_option_and_unknown_balancer_are_config_errors(two_tasks):
    with pytest.raises(ConfigError, match="wieghts"):
        create_balancer("fixed", two_tasks, wieghts={"seg": 2.0})
    with pytest.raises(ConfigError, match="known: .*uncertainty"):
        create_balancer("kendall", two_tasks)


def test_missing_task_loss_is_named(two_tasks):
    balancer = create_balancer("equal", two_tasks)
    with pytest.raises(ValueError, match="depth"):
        balancer({"seg": torch.tensor(1.0)})


def test_state_dict_round_trip(two_tasks):
    source = create_balancer("fixed", two_tasks, weights={"depth": 0.5})
    target = create_balancer("fixed", two_tasks)
    target.load_state_dict(source.state_dict())
    target({"seg": torch.tensor(1.0), "depth": torch.tensor(1.0)})
    assert target.weights() == {"seg": 1.0, "depth": 0.5}


@pytest.mark.parametrize(
    "name",
    [
        *("equal", "fixed", "uncertainty", "dwa", "gradnorm", "upgrad", "mgda", "pcgrad"),
        *("gls", "imtl_l", "famo", "db_mtl", "stch", "imtl_g", "aligned_mtl", "graddrop"),
    ],
)
def test_every_balancer_survives_a_zero_loss_and_fills_weights(two_tasks, name):
    """A batch without labels of one task gives it a zero loss that still has a graph."""
    shared = torch.nn.Linear(3, 4)
    heads = torch.nn.ModuleDict({task.name: torch.nn.Linear(4, 1) for task in two_tasks})
    balancer = create_balancer(name, two_tasks)
    features = shared(torch.randn(5, 3))
    losses = {
        "seg": heads["seg"](features).pow(2).mean(),
        "depth": heads["depth"](features).sum() * 0.0,
    }
    balancer.backward(losses, list(shared.parameters()))
    assert set(balancer.weights()) == {"seg", "depth"}
    assert all(torch.isfinite(p.grad).all() for p in shared.parameters())
    assert shared.weight.grad.abs().sum() > 0


def test_registry_lists_all_balancers():
    assert {"equal", "fixed", "uncertainty", "dwa", "gradnorm", "upgrad", "mgda", "pcgrad"} <= set(
        BALANCERS.names()
    )
