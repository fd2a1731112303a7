"""Task options are recorded once, by ``Task``: every registered task rebuilds from its
options, and they equal the arguments given (defaults filled in, sequences as lists).

The cases come from the registry, not from a table: each registered task is built as a run
on the synthetic scenes builds it (the dataset's options, such as class counts and names,
then the task's ``example_options``), so a new task is tested here with no line added."""

import inspect
import io
import json
from typing import Any

import pytest
import torch

from densetasks.data import SyntheticScenes
from densetasks.errors import ConfigError
from densetasks.tasks.depth import Depth
from densetasks.tasks.registry import TASKS, create_task

DATASET_OPTIONS = SyntheticScenes(1, size=(8, 8)).task_options
"""What the synthetic scenes give their tasks (class counts and names, instance classes)."""


def example(name: str) -> dict[str, Any]:
    """The options a run on the synthetic scenes builds task ``name`` with."""
    return {**DATASET_OPTIONS.get(name, {}), **TASKS.get(name).example_options}


def parameters(name: str) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(TASKS.get(name)).parameters)


def as_saved(value: Any) -> Any:
    """``value`` as a config file would hold it: tuples as lists, mappings as dicts (written
    independently of the library's conversion, through JSON)."""
    return json.loads(json.dumps(value, default=dict))


def saved_and_loaded(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` through ``torch.save`` and ``torch.load(weights_only=True)``."""
    buffer = io.BytesIO()
    torch.save(options, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", TASKS.names())
def test_the_options_are_the_arguments_given_and_every_default(name: str) -> None:
    given = example(name)
    options = create_task(name, **given).options()
    assert set(options) == set(parameters(name))
    for key, parameter in parameters(name).items():
        assert options[key] == as_saved(given.get(key, parameter.default)), key


@pytest.mark.parametrize("name", TASKS.names())
def test_the_options_rebuild_the_task_through_a_checkpoint(name: str) -> None:
    task = create_task(name, **example(name))
    options = task.options()
    assert saved_and_loaded(options) == options
    rebuilt = create_task(name, **saved_and_loaded(options))
    assert type(rebuilt) is type(task) and rebuilt.options() == options
    assert rebuilt.channels == task.channels and rebuilt.meaning() == task.meaning()


@pytest.mark.parametrize("name", TASKS.names())
def test_options_are_a_copy(name: str) -> None:
    task = create_task(name, **example(name))
    changed = task.options()
    for key, value in changed.items():
        if isinstance(value, list | dict):
            value.clear()
        changed[key] = "changed"
    assert task.options() == create_task(name, **example(name)).options()


@pytest.mark.parametrize("name", TASKS.names())
def test_an_unknown_option_is_named_with_its_config_section(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"tasks\.{name}: .*\['colour_scale'\]; it takes"):
        create_task(name, **example(name), colour_scale=2.0)


class Recorded(Depth):
    """Arguments of every container shape a config gives, none at its default."""

    def __init__(
        self,
        *,
        names: tuple[str, ...] = ("near",),
        nested: dict[str, Any] | None = None,
        scale: float = 1.0,
        tag: str | None = None,
    ) -> None:
        super().__init__(far=scale * 80.0)


def test_tuples_become_lists_and_mappings_dicts_at_every_depth() -> None:
    task = Recorded(names=("a", "b"), nested={"k": (1, 2), "m": {"n": (3,)}}, scale=0.5)
    expected = {
        "names": ["a", "b"],
        "nested": {"k": [1, 2], "m": {"n": [3]}},
        "scale": 0.5,
        "tag": None,
    }
    assert task.options() == expected and task.far == 40.0
    assert saved_and_loaded(task.options()) == expected
    assert Recorded(**saved_and_loaded(task.options())).options() == expected


def test_the_outermost_init_records_and_variadic_arguments_are_refused() -> None:
    class NearDepth(Depth):
        def __init__(self, *, near: float = 10.0) -> None:
            super().__init__(loss="berhu", far=near)

    task = NearDepth(near=5.0)
    assert task.options() == {"near": 5.0} and task.far == 5.0
    assert NearDepth(**task.options()).options() == task.options()
    with pytest.raises(TypeError, match=r"\*options"):

        class Loose(Depth):
            def __init__(self, **options: Any) -> None:
                super().__init__(**options)
