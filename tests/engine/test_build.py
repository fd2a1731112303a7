"""The config-to-objects factories of ``engine/build.py``: a single-task run's balancer."""

import json
from pathlib import Path

import pytest
import torch

from densetasks.balancers import FixedBalancer, UncertaintyBalancer
from densetasks.engine.build import build_balancer, build_model, single_task_balancer_note
from densetasks.engine.config import validate_config
from densetasks.engine.run import train
from densetasks.errors import ConfigError
from densetasks.tasks import create_task

DATA = {"options": {"n_train": 4, "n_val": 2, "n_test": 2, "size": [32, 32]}, "batch_size": 2}
TRAIN = {"steps": 3, "optimizer": "sgd", "lr": 0.01, "eval_every": 3, "images_every": 0}


def config(tasks: list[str], balancer: dict) -> object:
    architecture = "single_task" if len(tasks) == 1 else "hard_sharing"
    return validate_config(
        {
            "seed": 0,
            "tasks": {task: {} for task in tasks},
            "data": DATA,
            "model": {"architecture": architecture, "encoder": "tiny"},
            "balancer": balancer,
            "train": TRAIN,
        }
    )


def built(tasks: list[str], balancer: dict):
    run = config(tasks, balancer)
    task_objects = {name: create_task(name) for name in tasks}
    return run, task_objects, build_balancer(run, task_objects, build_model(run, task_objects))


@pytest.mark.parametrize(
    "balancer",
    [
        {"name": "uncertainty"},
        {"name": "dwa"},
        {"name": "fixed", "weights": {"depth": 10.0}},
        {"name": "gradnorm", "options": {"alpha": 1.5}},
    ],
)
def test_one_task_trains_on_its_plain_loss_whatever_the_balancer(balancer) -> None:
    run, tasks, module = built(["depth"], balancer)
    assert isinstance(module, FixedBalancer) and not list(module.parameters())
    loss = torch.tensor(0.8125)
    assert module({"depth": loss}).item() == 0.8125
    assert module.weights() == {"depth": 1.0}
    note = single_task_balancer_note(run, tasks)
    assert note.startswith(f"single-task run (depth): balancer {balancer['name']!r}")
    assert "plain loss" in note


@pytest.mark.parametrize(
    "balancer", [{}, {"name": "equal"}, {"name": "fixed", "weights": {"depth": 1.0}}]
)
def test_a_plain_single_task_balancer_is_kept_silently(balancer) -> None:
    run, tasks, module = built(["depth"], balancer)
    assert isinstance(module, FixedBalancer)
    assert single_task_balancer_note(run, tasks) is None


def test_several_tasks_keep_their_balancer() -> None:
    run, tasks, module = built(["normals", "depth"], {"name": "uncertainty"})
    assert isinstance(module, UncertaintyBalancer)
    assert single_task_balancer_note(run, tasks) is None


def test_a_misspelled_balancer_still_fails_for_one_task() -> None:
    with pytest.raises(ConfigError, match="unknown balancer 'uncertainity'"):
        built(["depth"], {"name": "uncertainity"})


def test_a_single_task_run_with_uncertainty_equals_the_plain_run(tmp_path: Path, capsys) -> None:
    """Same seed, same data: the inherited balancer changes nothing but one log line."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        plain = train(config(["depth"], {"name": "fixed"}), tmp_path / "plain")
        plain_log = capsys.readouterr().out
        inherited = train(config(["depth"], {"name": "uncertainty"}), tmp_path / "inherited")
        inherited_log = capsys.readouterr().out
    finally:
        torch.set_num_threads(threads)
    assert "not used" not in plain_log
    assert inherited_log.count("balancer 'uncertainty' is not used") == 1
    stored = [json.loads((run / "metrics_test.json").read_text()) for run in (plain, inherited)]
    assert stored[0]["metrics"] == stored[1]["metrics"]
    assert stored[0]["units"]["depth"]["rmse"] == "m"  # for the report's table
