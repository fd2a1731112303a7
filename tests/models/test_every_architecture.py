"""Every registered architecture goes through the engine with nothing but its registry line:
trained 3 steps, killed at step 2 and resumed bit for bit, evaluated, predicted (the
Predictor and ``densetasks predict``) and exported to ONNX with parity (``end_to_end`` in
``tests/conftest.py``, one run per architecture shared with ``tests/test_export.py``)."""

import math

import pytest

from densetasks.engine.inference import load_run
from densetasks.models import ARCHITECTURES

from ..conftest import architecture_tasks


@pytest.mark.parametrize("architecture", ARCHITECTURES.names())
def test_every_architecture_trains_resumes_evaluates_predicts_and_exports(
    architecture_runs, architecture
) -> None:
    result = architecture_runs[architecture]
    tasks = architecture_tasks(architecture)
    metrics = result["test"]["metrics"]
    assert set(metrics) == set(tasks)
    for task, values in metrics.items():
        primary = load_run(result["run"]).tasks[task].primary_metric
        assert math.isfinite(values[primary]), (task, values)
    assert set(result["prediction"].predictions) == set(tasks)
    assert {row.output for row in result["parity"].rows} >= set(tasks)
