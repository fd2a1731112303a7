"""The multi-task report on run directories built by hand."""

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from densetasks.errors import DataError
from densetasks.experiments.report import (
    build_report,
    comparison_table,
    format_text_table,
    load_records,
    match_baselines,
    write_report,
)
from densetasks.experiments.run_record import latest_sample_images, load_run_record, read_events

DIRECTIONS = {
    "semseg": {"miou": True, "pixel_acc": True},
    "depth": {"rmse": False, "abs_rel": False},
}
PRIMARY = {"semseg": "miou", "depth": "rmse"}


def write_run(
    root: Path,
    name: str,
    metrics: dict[str, dict[str, float]],
    architecture: str,
    split: str = "test",
    with_events: bool = True,
) -> Path:
    """A run directory in the engine's layout with a loss falling over 3 logged steps."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    tasks = list(metrics)
    config = {"tasks": {task: {} for task in tasks}, "model": {"architecture": architecture}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    stored = {
        "step": 30,
        "split": split,
        "metrics": metrics,
        "higher_is_better": {task: DIRECTIONS[task] for task in tasks},
        "primary": {task: PRIMARY[task] for task in tasks},
    }
    (run_dir / f"metrics_{split}.json").write_text(json.dumps(stored))
    if with_events:
        lines = []
        for step in (10, 20, 30):
            lines.append(
                {
                    "type": "train",
                    "step": step,
                    "losses": {t: 3.0 / step for t in tasks},
                    "total": 3.0 * len(tasks) / step,
                    "weights": {t: 1.0 + step / 100 for t in tasks},
                    "lr": {"decoder": 1e-3},
                    "images_per_s": 12.0,
                }
            )
            lines.append({"type": "eval", "split": "val", "step": step, "metrics": metrics})
        (run_dir / "events.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
        for step in (10, 30):
            folder = run_dir / "images" / f"step_{step}"
            folder.mkdir(parents=True)
            pixels = np.full((8, 8, 3), step, dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"0000_{tasks[0]}_pred.png")
    return run_dir


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    return {
        "semseg_stl": write_run(
            tmp_path, "semseg_stl", {"semseg": {"miou": 0.50, "pixel_acc": 0.80}}, "single_task"
        ),
        "depth_stl": write_run(
            tmp_path, "depth_stl", {"depth": {"rmse": 1.00, "abs_rel": 0.20}}, "single_task"
        ),
        "mtl": write_run(
            tmp_path,
            "mtl",
            {"semseg": {"miou": 0.55, "pixel_acc": 0.80}, "depth": {"rmse": 0.90, "abs_rel": 0.25}},
            "hard_sharing",
        ),
    }


def test_report_numbers_match_hand_computed_delta_m(runs: dict[str, Path]) -> None:
    records = load_records([runs["mtl"]], "test")
    baselines = load_records([runs["semseg_stl"], runs["depth_stl"]], "test")
    report = build_report(records, baselines, "test")
    entry = report["runs"][0]
    # primary: semseg +10 %, depth -(0.9-1)/1 = +10 %  -> +10 %
    assert entry["delta_m_percent"]["primary"] == pytest.approx(10.0)
    # all: semseg (10 + 0) / 2 = 5; depth (10 + -25) / 2 = -7.5 -> (5 - 7.5) / 2 = -1.25
    assert entry["delta_m_percent"]["all"] == pytest.approx(-1.25)
    assert entry["relative_gain_percent"]["depth"]["abs_rel"] == pytest.approx(-25.0)
    assert entry["delta_m_percent"]["missing_baselines"] == []
    assert report["baselines"]["depth"]["name"] == "depth_stl"
    assert entry["architecture"] == "hard_sharing"


def test_task_without_baseline_is_left_out_and_named(runs: dict[str, Path]) -> None:
    report = build_report(
        load_records([runs["mtl"]], "test"), load_records([runs["semseg_stl"]], "test"), "test"
    )
    delta = report["runs"][0]["delta_m_percent"]
    assert delta["tasks"] == ["semseg"]
    assert delta["missing_baselines"] == ["depth"]
    assert delta["primary"] == pytest.approx(10.0)


def test_without_baselines_delta_m_is_absent(runs: dict[str, Path]) -> None:
    report = build_report(load_records([runs["mtl"]], "test"), [], "test")
    assert report["runs"][0]["delta_m_percent"]["primary"] is None
    _header, rows = comparison_table(report)
    assert rows[-1][-1] == "—"


def test_table_rows_mark_primary_direction_and_gain(runs: dict[str, Path]) -> None:
    report = build_report(
        load_records([runs["mtl"]], "test"),
        load_records([runs["semseg_stl"], runs["depth_stl"]], "test"),
        "test",
    )
    header, rows = comparison_table(report)
    assert header == ["task", "metric", "single-task", "mtl"]
    by_metric = {(row[0], row[1]): row[2:] for row in rows}
    assert by_metric[("depth", "rmse* ↓")] == ["1", "0.9 (+10.00%)"]
    assert by_metric[("semseg", "pixel_acc ↑")] == ["0.8", "0.8 (+0.00%)"]
    assert by_metric[("Δm %", "primary metric*")] == ["0", "+10.00"]
    assert by_metric[("Δm %", "all metrics")] == ["0", "-1.25"]
    text = format_text_table(report)
    assert text.splitlines()[0].split() == ["task", "metric", "single-task", "mtl"]


def test_write_report_files(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    write_report([runs["mtl"]], [runs["semseg_stl"], runs["depth_stl"]], out, split="test")
    stored = json.loads((out / "report.json").read_text())
    assert stored["runs"][0]["delta_m_percent"]["primary"] == pytest.approx(10.0)
    markdown = (out / "report.md").read_text()
    assert "| depth | rmse* ↓ | 1 | 0.9 (+10.00%) |" in markdown
    for slug in ("losses", "loss_weights", "validation"):
        assert f"(plots/{slug}.png)" in markdown
        assert (out / "plots" / f"{slug}.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "samples" / "mtl" / "0000_semseg_pred.png").is_file()
    html = (out / "report.html").read_text()
    assert 'src="http' not in html and "<link" not in html and "<script" not in html
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    # three plots + one sample picture for each of the three runs
    assert len(images) == 6
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data in images)


def test_weights_plot_only_for_multi_task_runs(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    write_report([runs["semseg_stl"]], [], out, split="test")
    assert not (out / "plots" / "loss_weights.png").exists()
    assert (out / "plots" / "losses.png").is_file()


def test_run_without_metrics_names_it_and_says_to_eval(tmp_path: Path) -> None:
    run_dir = tmp_path / "unevaluated"
    run_dir.mkdir()
    with pytest.raises(DataError, match=r"unevaluated has no metrics_val.json.*densetasks eval"):
        load_run_record(run_dir, "val")


def test_baseline_with_several_tasks_is_refused(runs: dict[str, Path]) -> None:
    with pytest.raises(DataError, match="trained 2 tasks"):
        match_baselines(load_records([runs["mtl"]], "test"))


def test_two_baselines_for_one_task_are_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    other = write_run(tmp_path / "b", "semseg_stl", {"semseg": {"miou": 0.4}}, "single_task")
    records = load_records([runs["semseg_stl"], other], "test")
    assert records[0].name != records[1].name  # clashing folder names fall back to paths
    with pytest.raises(DataError, match="two baselines for task 'semseg'"):
        match_baselines(records)


def test_baseline_lacking_a_metric_names_the_run(runs: dict[str, Path], tmp_path: Path) -> None:
    partial = write_run(tmp_path / "p", "depth_partial", {"depth": {"rmse": 1.0}}, "single_task")
    with pytest.raises(DataError, match=r"mtl: cannot compare.*lacks metric 'abs_rel'"):
        build_report(load_records([runs["mtl"]], "test"), load_records([partial], "test"), "test")


def test_latest_sample_folder_is_chosen_numerically(tmp_path: Path) -> None:
    for step in (9, 10, 100):
        folder = tmp_path / f"step_{step}"
        folder.mkdir()
        (folder / f"{step}.png").write_bytes(b"")
    assert [path.name for path in latest_sample_images(tmp_path)] == ["100.png"]
    assert latest_sample_images(tmp_path / "missing") == []


def test_bad_event_line_names_file_and_line(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "train", "step": 1}\nnot json\n')
    with pytest.raises(DataError, match=r"events.jsonl:2"):
        read_events(events)


def test_zero_baseline_metric_is_left_out_and_named(tmp_path: Path) -> None:
    stl = write_run(tmp_path, "stl", {"depth": {"rmse": 2.0, "abs_rel": 0.0}}, "single_task")
    mtl = write_run(tmp_path, "mtl", {"depth": {"rmse": 1.0, "abs_rel": 0.1}}, "hard_sharing")
    report = build_report(load_records([mtl], "test"), load_records([stl], "test"), "test")
    delta = report["runs"][0]["delta_m_percent"]
    assert delta["all"] == pytest.approx(50.0) and delta["primary"] == pytest.approx(50.0)
    assert delta["zero_baselines"] == {"depth": ["abs_rel"]}
    write_report([mtl], [stl], tmp_path / "out", split="test")
    assert "baseline depth abs_rel is 0" in (tmp_path / "out" / "report.md").read_text()
