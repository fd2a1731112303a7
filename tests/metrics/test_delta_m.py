"""Δm against published table rows and hand-computed averages."""

import pytest

from densetasks.metrics.delta_m import delta_m, relative_gain


def test_reproduces_densemtl_table1_synthia_sd() -> None:
    """Lopes et al., WACV 2023, Table 1, Synthia S-D: STL 67.43 / 5.379 vs Ours 80.53 / 4.161
    -> +21.04."""
    ours = {"semseg": {"miou": 80.53}, "depth": {"rmse": 4.161}}
    stl = {"semseg": {"miou": 67.43}, "depth": {"rmse": 5.379}}
    directions = {"semseg": {"miou": True}, "depth": {"rmse": False}}
    primary = {"semseg": "miou", "depth": "rmse"}
    assert round(delta_m(ours, stl, directions, primary), 2) == 21.04


def test_reproduces_compositetasking_table1_mhn_rule_s() -> None:
    """Popovic et al., CVPR 2021, Table 1: MHN under rule S against STN -> −4.60."""
    tasks = ["edges", "semseg", "parts", "normals", "saliency"]
    stn = dict(zip(tasks, [69.50, 63.69, 58.76, 15.58, 69.38], strict=True))
    mhn = dict(zip(tasks, [68.10, 60.77, 54.21, 16.44, 67.21], strict=True))
    directions = {task: {"m": task != "normals"} for task in tasks}
    value = delta_m(
        {t: {"m": mhn[t]} for t in tasks},
        {t: {"m": stn[t]} for t in tasks},
        directions,
        primary={t: "m" for t in tasks},
    )
    assert round(value, 2) == -4.60


def test_all_metrics_are_averaged_within_each_task_then_over_tasks() -> None:
    metrics = {"depth": {"rmse": 0.8, "delta1": 0.6}, "semseg": {"miou": 0.55}}
    baselines = {"depth": {"rmse": 1.0, "delta1": 0.75}, "semseg": {"miou": 0.5}}
    directions = {"depth": {"rmse": False, "delta1": True}, "semseg": {"miou": True}}
    # depth: rmse -(0.8 - 1) / 1 = +0.2, delta1 (0.6 - 0.75) / 0.75 = -0.2 -> mean 0.0;
    # semseg: (0.55 - 0.5) / 0.5 = +0.1.  Over tasks: (0.0 + 0.1) / 2 = 5 %.
    assert delta_m(metrics, baselines, directions) == pytest.approx(5.0)
    # Over all three metrics flat it would be (0.2 - 0.2 + 0.1) / 3 = 3.33 %: not what we do.
    primary = {"depth": "rmse", "semseg": "miou"}
    assert delta_m(metrics, baselines, directions, primary) == pytest.approx(15.0)


def test_identical_to_baseline_gives_zero() -> None:
    table = {"a": {"x": 3.0, "y": 7.0}}
    assert delta_m(table, table, {"a": {"x": True, "y": False}}) == 0.0


def test_relative_gain_sign_follows_direction() -> None:
    assert relative_gain(2.0, 4.0, higher_is_better=True) == pytest.approx(-0.5)
    assert relative_gain(2.0, 4.0, higher_is_better=False) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("metrics", "baselines", "directions", "primary", "message"),
    [
        (
            {"depth": {"rmse": 1.0}},
            {"semseg": {"miou": 1.0}},
            {"depth": {"rmse": False}},
            None,
            "task 'depth' has no single-task baseline",
        ),
        (
            {"depth": {"rmse": 1.0}},
            {"depth": {"absrel": 1.0}},
            {"depth": {"rmse": False}},
            None,
            "baseline of task 'depth' lacks metric 'rmse'",
        ),
        (
            {"depth": {"rmse": 1.0}},
            {"depth": {"rmse": 0.0}},
            {"depth": {"rmse": False}},
            None,
            "baseline depth/rmse is 0",
        ),
        (
            {"depth": {"rmse": 1.0}},
            {"depth": {"rmse": 1.0}},
            {"depth": {}},
            None,
            "direction .* of depth/rmse",
        ),
        (
            {"depth": {"rmse": 1.0}},
            {"depth": {"rmse": 1.0}},
            {"depth": {"rmse": False}},
            {"depth": "absrel"},
            "does not report metric 'absrel'",
        ),
        (
            {"depth": {"rmse": 1.0}},
            {"depth": {"rmse": 1.0}},
            {"depth": {"rmse": False}},
            {"semseg": "miou"},
            "no primary metric given for task 'depth'",
        ),
        ({}, {}, {}, None, "at least one task"),
    ],
)
def test_errors_name_the_missing_piece(metrics, baselines, directions, primary, message) -> None:
    with pytest.raises(ValueError, match=message):
        delta_m(metrics, baselines, directions, primary)
