"""Every registered task goes through the engine with nothing but its file and registry line:
one hard-sharing run of all of them (``every_task_run`` in ``tests/conftest.py``, built with
each task's ``example_options`` over the synthetic scenes' options) is trained, killed and
resumed bit for bit, evaluated, predicted and exported with parity; and each task's hooks
describe what it predicts: its meaning fits the values it exports, its key fits its picture."""

import math

import numpy as np
import pytest
import torch

from densetasks.engine.inference import load_run
from densetasks.pictures import ClassLegend, ColourBar, IconKey, joint_key, keyed_picture
from densetasks.tasks.registry import TASKS


@pytest.fixture(scope="module")
def loaded(every_task_run):
    return load_run(every_task_run["run"])


def test_every_task_trains_resumes_evaluates_predicts_and_exports(every_task_run, loaded) -> None:
    metrics = every_task_run["test"]["metrics"]
    assert set(metrics) == set(TASKS.names()) == set(loaded.tasks)
    for name, task in loaded.tasks.items():
        assert task.primary_metric in metrics[name], name
    assert set(every_task_run["prediction"].predictions) == set(TASKS.names())
    checked = {(row.images, row.output) for row in every_task_run["parity"].rows}
    assert {(images, name) for images in ("random", "test") for name in TASKS.names()} <= checked


@pytest.mark.parametrize("name", TASKS.names())
def test_the_meaning_describes_the_prediction_values(every_task_run, loaded, name) -> None:
    task = loaded.tasks[name]
    meaning = task.meaning()
    output = every_task_run["prediction"].outputs[name][None]
    with torch.no_grad():
        values = task.prediction_values(output)[0]
    if meaning.channels:
        assert values.ndim == 3 and values.shape[0] == len(meaning.channels)
    else:
        assert values.ndim == 2
    if meaning.classes:
        assert not values.is_floating_point()
        assert int(values.min()) >= 0 and int(values.max()) < len(meaning.classes)
    low, high = meaning.value_range
    assert low is None or float(values.min()) >= low
    assert high is None or float(values.max()) <= high
    assert meaning.text and meaning.digits >= 0
    assert all(math.isfinite(v) for v in values.double().flatten().tolist())


@pytest.mark.parametrize("name", TASKS.names())
def test_the_key_is_drawn_under_the_picture_at_its_width(every_task_run, loaded, name) -> None:
    task = loaded.tasks[name]
    value = every_task_run["prediction"].predictions[name]
    picture = task.visualize(value)
    key = task.picture_key(value)
    keyed = keyed_picture(picture, key)
    np.testing.assert_array_equal(keyed[: picture.shape[0]], picture)
    assert keyed.shape[1] == picture.shape[1]
    if key is None:
        assert keyed is picture and task.picture_colours  # said in words instead
    elif isinstance(key, ClassLegend):
        assert len(key.names) == len(key.colours) == len(task.meaning().classes)
    elif isinstance(key, IconKey):
        assert key.icon.dtype == np.uint8 and key.text
    else:
        assert isinstance(key, ColourBar) and key.low <= key.high


@pytest.mark.parametrize("name", TASKS.names())
def test_a_picture_painted_with_its_own_key_is_its_picture(every_task_run, loaded, name) -> None:
    """``visualize_with`` the value's own key (joined with itself: a label and prediction
    pair of equal values) paints what ``visualize`` paints: the joint key changes colours
    only by widening what they span."""
    task = loaded.tasks[name]
    value = every_task_run["prediction"].predictions[name]
    key = task.picture_key(value)
    np.testing.assert_array_equal(task.visualize_with(value, key), task.visualize(value))
    np.testing.assert_array_equal(
        task.visualize_with(value, joint_key(key, key)), task.visualize(value)
    )
