"""Task options are recorded once, by ``Task``: every registered task rebuilds from its
options, and they equal the arguments given (defaults filled in, sequences as lists)."""

import inspect
import io
from typing import Any

import pytest
import torch

from densetasks.tasks.depth import Depth
from densetasks.tasks.registry import TASKS, create_task

DEFAULTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (the fewest arguments, the options they give: what hand-written options() gave)
    "semseg": (
        {"num_classes": 3},
        {"num_classes": 3, "class_names": None, "focal_gamma": 0.0, "composite_eps": 1e-8},
    ),
    "parts": (
        {"num_classes": 7},
        {"num_classes": 7, "class_names": None, "focal_gamma": 0.0, "composite_eps": 1e-8},
    ),
    "depth": (
        {},
        {
            "loss": "l1_inverse",
            "far": 80.0,
            "ssi_depth_weight": 0.25,
            "max_depth": None,
            "disparity_scale": None,
            "primary_metric": "rmse",
        },
    ),
    "normals": ({}, {}),
    "edges": (
        {},
        {"pos_weight": 0.95, "neg_weight": 0.05, "thresholds": 99, "max_dist": 0.0075, "nms": True},
    ),
    "saliency": ({}, {"protocol": "per_image_f1", "bce_per_channel": False}),
    "task_palette": (
        {"tasks": ["semseg", "parts", "edges", "saliency", "normals"]},
        {
            "tasks": ["semseg", "parts", "edges", "saliency", "normals"],
            "rule": "R2",
            "rule_options": None,
            "focal_gamma": 0.0,
            "composite_eps": 1e-8,
        },
    ),
    "instance": (
        {},
        {
            "composite_scale": 32.0,
            "instance_classes": None,
            "semantic_task": "semseg",
            "grouping": {},
        },
    ),
}

EXPLICIT: dict[str, dict[str, Any]] = {
    # name: a value other than the default for every constructor argument
    "semseg": {
        "num_classes": 2,
        "class_names": ("sky", "road"),
        "focal_gamma": 2.0,
        "composite_eps": 1e-6,
    },
    "parts": {
        "num_classes": 2,
        "class_names": ["bg", "arm"],
        "focal_gamma": 2.0,
        "composite_eps": 0.1,
    },
    "depth": {
        "loss": "berhu",
        "far": 50.0,
        "ssi_depth_weight": 0.5,
        "max_depth": 40.0,
        "disparity_scale": 100.0,
        "primary_metric": "disparity_mae",
    },
    "normals": {},
    "edges": {
        "pos_weight": 0.9,
        "neg_weight": 0.1,
        "thresholds": 9,
        "max_dist": 0.01,
        "nms": False,
    },
    "saliency": {"protocol": "pooled_beta2_0.3", "bce_per_channel": True},
    "task_palette": {
        "tasks": ("near", "far"),
        "rule": "R3",
        "rule_options": {"classes": {"near": [0], "far": [1, 2]}, "semantic_task": "seg"},
        "focal_gamma": 2.0,
        "composite_eps": 1e-6,
    },
    "instance": {
        "composite_scale": 16.0,
        "instance_classes": (3, 4),
        "semantic_task": "seg",
        "grouping": {"min_samples": 5, "grid": None},
    },
}

AS_SAVED = {
    "semseg": {"class_names": ["sky", "road"]},
    "instance": {"instance_classes": [3, 4]},
    "task_palette": {"tasks": ["near", "far"]},
}
"""Where the options differ from ``EXPLICIT``: tuples are recorded as lists."""


def parameters(name: str) -> set[str]:
    return set(inspect.signature(TASKS.get(name)).parameters)


def saved_and_loaded(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` through ``torch.save`` and ``torch.load(weights_only=True)``."""
    buffer = io.BytesIO()
    torch.save(options, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_every_registered_task_has_cases() -> None:
    assert set(DEFAULTS) == set(EXPLICIT) == set(TASKS.names())


@pytest.mark.parametrize("name", TASKS.names())
def test_default_options_fill_in_every_argument(name: str) -> None:
    given, expected = DEFAULTS[name]
    task = create_task(name, **given)
    assert task.options() == expected
    assert set(expected) == parameters(name)
    assert create_task(name, **task.options()).options() == expected


@pytest.mark.parametrize("name", TASKS.names())
def test_explicit_options_round_trip_through_a_checkpoint(name: str) -> None:
    explicit = EXPLICIT[name]
    assert set(explicit) == parameters(name)  # every argument is exercised
    task = create_task(name, **explicit)
    options = task.options()
    assert options == {**explicit, **AS_SAVED.get(name, {})}
    assert saved_and_loaded(options) == options
    rebuilt = create_task(name, **saved_and_loaded(options))
    assert type(rebuilt) is type(task) and rebuilt.options() == options


@pytest.mark.parametrize("name", TASKS.names())
def test_options_are_a_copy(name: str) -> None:
    task = create_task(name, **EXPLICIT[name])
    changed = task.options()
    for key, value in changed.items():
        if isinstance(value, list | dict):
            value.clear()
        changed[key] = "changed"
    assert task.options() == create_task(name, **EXPLICIT[name]).options()


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
