"""The multi-task report on run directories built by hand."""

import base64
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from densetasks.errors import DataError
from densetasks.experiments.report import (
    build_report,
    comparison_table,
    format_text_table,
    load_group,
    load_records,
    match_baselines,
    write_report,
)
from densetasks.experiments.report_labels import MAX_LABEL, label_footnotes, short_labels
from densetasks.experiments.report_plots import (
    _draw_weights,
    blank_figure,
    legend_outside,
    line_style,
    smoothed,
)
from densetasks.experiments.report_samples import SampleSet, markdown_samples, sample_rows
from densetasks.experiments.report_seeds import close_to_best, mean_std
from densetasks.experiments.run_record import latest_sample_images, load_run_record, read_events

DIRECTIONS = {
    "semseg": {"miou": True, "pixel_acc": True},
    "depth": {"rmse": False, "abs_rel": False},
}
PRIMARY = {"semseg": "miou", "depth": "rmse"}
UNITS = {"semseg": {"miou": "%", "pixel_acc": "%"}, "depth": {"rmse": "m"}}


def write_run(
    root: Path,
    name: str,
    metrics: dict[str, dict[str, float]],
    architecture: str,
    split: str = "test",
    with_events: bool = True,
    seed: int | None = None,
    lr: float = 1e-3,
    units: bool = False,
) -> Path:
    """A run directory in the engine's layout with a loss falling over 3 logged steps.

    With ``seed`` the config holds it and ``train.lr``, as a seed of one config would;
    with ``units`` the metrics file holds :data:`UNITS`, as the engine writes it now.
    """
    run_dir = root / name
    run_dir.mkdir(parents=True)
    tasks = list(metrics)
    config = {"tasks": {task: {} for task in tasks}, "model": {"architecture": architecture}}
    if seed is not None:
        config.update(seed=seed, train={"lr": lr})
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    stored = {
        "step": 30,
        "split": split,
        "metrics": metrics,
        "higher_is_better": {task: DIRECTIONS[task] for task in tasks},
        "primary": {task: PRIMARY[task] for task in tasks},
    }
    if units:
        stored["units"] = {task: UNITS[task] for task in tasks}
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


def test_the_terminal_table_has_units_a_footer_and_the_rows_of_report_md(tmp_path: Path) -> None:
    """RMSE 1.109 -> 1.073 is a gain of +3.25 %: the footer says why it is positive."""
    semseg = write_run(
        tmp_path,
        "stl_semseg",
        {"semseg": {"miou": 40.0, "pixel_acc": 80.0}},
        "single_task",
        units=True,
    )
    depth = write_run(
        tmp_path, "stl_depth", {"depth": {"rmse": 1.109, "abs_rel": 0.2}}, "single_task", units=True
    )
    mtl = write_run(
        tmp_path,
        "mtl",
        {"semseg": {"miou": 38.0, "pixel_acc": 81.0}, "depth": {"rmse": 1.073, "abs_rel": 0.2}},
        "hard_sharing",
        units=True,
    )
    report = write_report([mtl], [semseg, depth], tmp_path / "report", split="test")
    assert report["units"] == UNITS
    lines = format_text_table(report).splitlines()
    rows = {tuple(re.split(r"\s{2,}", line)[:2]): re.split(r"\s{2,}", line)[2:] for line in lines}
    assert rows[("depth", "rmse* ↓ [m]")] == ["1.109", "1.073 (+3.25%)"]
    assert rows[("semseg", "miou* ↑ [%]")] == ["40", "38 (-5.00%)"]
    assert ("depth", "abs_rel ↓") in rows  # a ratio has no unit
    footer = lines[lines.index("") + 1 :]
    assert len(footer) == 2
    assert footer[0].startswith("* primary metric, ↑/↓ higher/lower is better, [unit]; (+x%)")
    assert "signed: + is better" in footer[0] and footer[1].startswith("Δm %: mean gain")
    markdown = (tmp_path / "report" / "report.md").read_text()
    for line in lines[2 : lines.index("")]:
        cells = re.split(r"\s{2,}", line)
        assert "| " + " | ".join(cells) + " |" in markdown, line
    assert "[unit] the metric's unit" in markdown


def test_the_terminal_table_names_what_is_left_out_of_delta_m(runs: dict[str, Path]) -> None:
    report = build_report(
        load_records([runs["mtl"]], "test"), load_records([runs["semseg_stl"]], "test"), "test"
    )
    assert format_text_table(report).splitlines()[-1] == (
        "mtl: no baseline for depth (left out of Δm)."
    )


def test_write_report_files(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    write_report([runs["mtl"]], [runs["semseg_stl"], runs["depth_stl"]], out, split="test")
    stored = json.loads((out / "report.json").read_text())
    assert stored["runs"][0]["delta_m_percent"]["primary"] == pytest.approx(10.0)
    markdown = (out / "report.md").read_text()
    assert "| depth | rmse* ↓ | 1 | 0.9 (+10.00%) |" in markdown
    summary = (
        "Split: `test`. Runs: `mtl` (hard_sharing, step 30). Single-task baselines: "
        "semseg: `semseg_stl`, depth: `depth_stl`."
    )
    assert summary in markdown
    assert summary.replace("`", "") in (out / "report.html").read_text()
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
    with pytest.raises(DataError, match=r"baselines of task 'semseg': .* has no seed"):
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


def write_seeds(root: Path, name: str, tables: list[dict], architecture: str) -> list[Path]:
    """One run per metric table, seeds 0, 1, ... of one config, in ``root/name_s<seed>``."""
    return [
        write_run(root, f"{name}_s{seed}", table, architecture, with_events=False, seed=seed)
        for seed, table in enumerate(tables)
    ]


def semseg_depth(miou: float, rmse: float) -> dict[str, dict[str, float]]:
    return {"semseg": {"miou": miou, "pixel_acc": 0.8}, "depth": {"rmse": rmse, "abs_rel": 0.2}}


@pytest.fixture
def seeded(tmp_path: Path) -> dict[str, list[Path]]:
    """Baselines of 2 seeds (miou 0.52 ± 0.028, rmse 1.1 ± 0.14) and two rows of seeds.

    ``mtl`` gains 0, 10 and 20 % on both primary metrics over the baselines' means;
    ``uw`` (2 seeds) is within mtl's spread on miou, far better on rmse.
    """
    stl_semseg = [{"semseg": {"miou": m, "pixel_acc": 0.8}} for m in (0.50, 0.54)]
    stl_depth = [{"depth": {"rmse": r, "abs_rel": 0.2}} for r in (1.0, 1.2)]
    mtl = [semseg_depth(0.52 * (1 + g), 1.1 * (1 - g)) for g in (0.0, 0.1, 0.2)]
    return {
        "baselines": write_seeds(tmp_path, "stl_semseg", stl_semseg, "single_task")
        + write_seeds(tmp_path, "stl_depth", stl_depth, "single_task"),
        "mtl": write_seeds(tmp_path, "mtl", mtl, "hard_sharing"),
        "uw": write_seeds(
            tmp_path, "uw", [semseg_depth(0.60, 0.50), semseg_depth(0.62, 0.52)], "hard_sharing"
        ),
    }


def seeded_report(seeded: dict[str, list[Path]]) -> dict:
    groups = [load_group(name, seeded[name], "test") for name in ("mtl", "uw")]
    return build_report(groups, load_records(seeded["baselines"], "test"), "test")


def test_seeds_give_mean_and_sample_std_of_metrics_and_delta_m(seeded) -> None:
    report = seeded_report(seeded)
    semseg = report["baselines"]["semseg"]
    assert semseg["n"] == 2 and semseg["seeds"] == [0, 1]
    assert semseg["metrics"]["miou"] == pytest.approx(0.52)
    assert semseg["metrics_std"]["miou"] == pytest.approx(0.04 / 2**0.5)  # n − 1
    mtl = report["runs"][0]
    assert (mtl["name"], mtl["n"], mtl["seeds"]) == ("mtl", 3, [0, 1, 2])
    assert mtl["metrics"]["semseg"]["miou"] == pytest.approx(0.572)
    assert mtl["metrics_std"]["semseg"]["miou"] == pytest.approx(0.052)
    assert mtl["metrics_std"]["depth"]["abs_rel"] == pytest.approx(0.0)
    # Per seed against the baselines' means: primary Δm 0, 10, 20 %; all metrics half that
    # (pixel_acc and abs_rel gain 0).
    delta = mtl["delta_m_percent"]
    assert delta["primary_per_seed"] == pytest.approx([0.0, 10.0, 20.0])
    assert (delta["primary"], delta["primary_std"]) == pytest.approx((10.0, 10.0))
    assert (delta["all"], delta["all_std"]) == pytest.approx((5.0, 5.0))
    assert mtl["relative_gain_percent"]["depth"]["rmse"] == pytest.approx(10.0)
    assert mtl["relative_gain_percent_std"]["depth"]["rmse"] == pytest.approx(10.0)
    uw = report["runs"][1]["delta_m_percent"]["primary_per_seed"]
    by_hand = [(0.08 / 0.52 + 0.6 / 1.1) * 50, (0.10 / 0.52 + 0.58 / 1.1) * 50]
    assert uw == pytest.approx(by_hand)


def test_within_spread_pairs_and_the_marker_next_to_the_best_row(seeded) -> None:
    report = seeded_report(seeded)
    lines = {(line["task"], line["metric"]): line["pairs"] for line in report["within_spread"]}
    # miou: |0.572 − 0.61| = 0.038 ≤ 0.052 + 0.014; rmse: |0.99 − 0.51| > 0.11 + 0.014.
    assert lines[("semseg", "miou")] == [["mtl", "uw"]]
    assert lines[("depth", "rmse")] == []
    assert lines[("delta_m_percent", "primary")] == []
    assert lines[("semseg", "pixel_acc")] == [["mtl", "uw"]]  # equal means, no spread
    header, rows = comparison_table(report)
    assert header == ["task", "metric", "single-task (n=2)", "mtl (n=3)", "uw (n=2)"]
    by_metric = {(row[0], row[1]): row[2:] for row in rows}
    assert by_metric[("semseg", "miou* ↑")] == [
        "0.52 ± 0.028",
        "0.572 ± 0.052 (+10.00%) ≈",
        "0.61 ± 0.014 (+17.31%)",
    ]
    assert by_metric[("depth", "rmse* ↓")][1] == "0.99 ± 0.11 (+10.00%)"
    assert by_metric[("Δm %", "primary metric*")][:2] == ["0", "+10.00 ± 10.00"]


def test_a_single_run_next_to_seeds_has_no_spread_and_no_marker(seeded, tmp_path) -> None:
    single = write_run(tmp_path / "one", "single", semseg_depth(0.6, 0.5), "hard_sharing")
    rows = [load_group("mtl", seeded["mtl"], "test"), load_record_row(single)]
    report = build_report(rows, load_records(seeded["baselines"], "test"), "test")
    assert "n" not in report["runs"][1]
    assert report["within_spread"] == []  # one row with seeds: nothing to compare
    _header, table = comparison_table(report)
    assert table[0][-1] == "0.6 (+15.38%)"


def load_record_row(run_dir: Path):
    return load_records([run_dir], "test")[0]


def test_write_report_with_groups_shows_seeds_in_every_output(seeded, tmp_path) -> None:
    out = tmp_path / "report"
    groups = {name: seeded[name] for name in ("mtl", "uw")}
    write_report([], seeded["baselines"], out, split="test", groups=groups)
    markdown = (out / "report.md").read_text()
    assert "| semseg | miou* ↑ | 0.52 ± 0.028 | 0.572 ± 0.052 (+10.00%) ≈ |" in markdown
    assert "`mtl` (hard_sharing, n=3, seeds 0, 1, 2, steps 30, 30, 30)" in markdown
    assert "semseg: `stl_semseg_s0, stl_semseg_s1` (n=2, seeds 0, 1" in markdown
    assert "|mean − mean_best| ≤ std + std_best" in markdown
    html = (out / "report.html").read_text()
    assert "0.572 ± 0.052 (+10.00%) ≈" in html and "mean_best" in html
    stored = json.loads((out / "report.json").read_text())
    assert stored["within_spread"][0] == {
        "task": "semseg",
        "metric": "miou",
        "pairs": [["mtl", "uw"]],
    }


def test_single_runs_have_no_seed_fields_or_seed_legend(runs: dict[str, Path], tmp_path) -> None:
    out = tmp_path / "report"
    report = write_report([runs["mtl"]], [runs["semseg_stl"], runs["depth_stl"]], out)
    assert "within_spread" not in report and "n" not in report["runs"][0]
    assert "±" not in (out / "report.md").read_text()
    assert "mean_best" not in (out / "report.html").read_text()


def test_a_group_of_one_run_is_that_run_under_the_group_name(runs: dict[str, Path]) -> None:
    group = load_group("hard", [runs["mtl"]], "test")
    baselines = load_records([runs["semseg_stl"], runs["depth_stl"]], "test")
    entry = build_report([group], baselines, "test")["runs"][0]
    alone = build_report(load_records([runs["mtl"]], "test"), baselines, "test")["runs"][0]
    assert entry == {**alone, "name": "hard"}


def test_seeds_must_differ_only_by_their_seed(tmp_path: Path) -> None:
    table = semseg_depth(0.5, 1.0)
    a = write_run(tmp_path, "a", table, "hard_sharing", seed=0, lr=0.001)
    b = write_run(tmp_path, "b", table, "hard_sharing", seed=1, lr=0.002)
    c = write_run(tmp_path, "c", table, "hard_sharing", seed=0)
    with pytest.raises(DataError, match=r"mtl: .* differ in more than their seed: train.lr"):
        load_group("mtl", [a, b], "test")
    with pytest.raises(DataError, match=r"have the same seed 0 \(the same run twice\?\)"):
        load_group("mtl", [a, c], "test")
    with pytest.raises(DataError, match="two rows of the report are named 'mtl'"):
        build_report([load_group("mtl", [a], "test")] * 2, [], "test")


def test_baseline_seeds_must_be_seeds_of_one_config(tmp_path: Path) -> None:
    a = write_run(tmp_path, "a", {"semseg": {"miou": 0.5}}, "single_task", seed=0)
    b = write_run(tmp_path, "b", {"semseg": {"miou": 0.5}}, "hard_sharing", seed=1)
    with pytest.raises(DataError, match=r"baselines of task 'semseg'.*model.architecture"):
        match_baselines(load_records([a, b], "test"))


@pytest.mark.parametrize(
    "spreads, higher, close",
    [
        ([(1.0, 0.1), (1.15, 0.1), (1.3, 0.1)], True, {1}),  # 0.15 ≤ 0.2, 0.3 > 0.2
        ([(1.0, 0.1), (1.15, 0.1), (1.3, 0.1)], False, {1}),
        ([(1.0, 0.1), (1.15, None), (1.08, 0.0)], True, {0}),  # a single run is not compared
        ([(1.0, None), (2.0, None)], True, set()),
    ],
)
def test_close_to_best(spreads, higher, close) -> None:
    assert close_to_best(spreads, higher) == close


def test_mean_std_is_the_sample_std() -> None:
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([4.0]) == (4.0, None)
    assert mean_std([0.8, 0.8, 0.8]) == (0.8, 0.0)  # exactly: no 1e-16 std under the table
    mean, std = mean_std([0.5, float("nan")])
    assert math.isnan(mean) and math.isnan(std)


# Short run labels (footnotes, tooltips), legends outside the axes, smoothed losses.

SWEEP_NAMES = [
    "balancer.weights.semseg=1,balancer.weights.depth=0.1,seed=0",
    "balancer.weights.semseg=1,balancer.weights.depth=10,seed=0",
    "balancer.weights.semseg=1,balancer.weights.depth=100,seed=0",
]


def test_sweep_names_keep_what_differs_under_the_last_key_part() -> None:
    labels = short_labels(SWEEP_NAMES)
    assert list(labels.values()) == ["depth=0.1", "depth=10", "depth=100"]


def test_plain_names_are_kept_and_every_label_is_unique_and_short() -> None:
    names = ["mtl", "x" * 40, "x" * 40 + "y", "a.b=1,c.b=2", *SWEEP_NAMES]
    labels = short_labels(names)
    assert labels["mtl"] == "mtl"
    assert len(set(labels.values())) == len(names)
    assert labels["x" * 40 + "y"] == labels["x" * 40] + " #2"
    assert labels["a.b=1,c.b=2"] == "a.b=1,c.b=2"  # cut keys would clash: kept whole
    assert all(len(label) <= MAX_LABEL + 3 for label in labels.values())


def test_footnotes_map_each_shortened_label_back_to_its_name() -> None:
    labels = short_labels(["mtl", *SWEEP_NAMES])
    footnotes = label_footnotes(labels)
    assert len(footnotes) == len(SWEEP_NAMES)  # mtl is not shortened
    back = dict(line.split(": ", 1) for line in footnotes)
    assert {back[labels[name]] for name in SWEEP_NAMES} == set(SWEEP_NAMES)


def test_the_report_shows_labels_with_footnote_and_tooltip(tmp_path: Path) -> None:
    metrics = {"semseg": {"miou": 0.5, "pixel_acc": 0.8}}
    runs = [write_run(tmp_path / "runs", name, metrics, "hard_sharing") for name in SWEEP_NAMES]
    report = write_report(runs, [], tmp_path / "report")
    assert report["labels"] == short_labels(SWEEP_NAMES)
    assert json.loads((tmp_path / "report" / "report.json").read_text())["labels"]
    text = format_text_table(report)
    assert "depth=0.1  " in text and f"depth=0.1: {SWEEP_NAMES[0]}" in text
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| depth=0.1 |" in markdown and f"depth=0.1: {SWEEP_NAMES[0]}" in markdown
    page = (tmp_path / "report" / "report.html").read_text()
    assert f'<th title="{SWEEP_NAMES[0]}">depth=0.1</th>' in page
    assert f'<h3 title="{SWEEP_NAMES[1]}">depth=10</h3>' in page


def test_the_legend_sits_right_of_the_axes() -> None:
    figure = blank_figure((4, 3))
    axes = figure.subplots()
    axes.plot([0, 1, 2], [2, 1, 0], label="semseg")
    legend_outside(axes)
    renderer = FigureCanvasAgg(figure).get_renderer()
    legend_box = axes.get_legend().get_window_extent(renderer)
    assert legend_box.x0 >= axes.get_window_extent(renderer).x1


def test_smoothed_is_a_bias_corrected_moving_average() -> None:
    assert smoothed([2.0, 2.0, 2.0]) == [2.0, 2.0, 2.0]  # no pull towards 0 at the start
    values = smoothed([1.0, 0.0], factor=0.5)
    assert values == [1.0, (0.5 * 0.5 + 0.0) / (1 - 0.25)]


def test_sample_pictures_become_rows_of_the_input_then_the_tasks_in_the_run_order(tmp_path) -> None:
    names = [
        "1_input", "0_task_palette_pred", "0_depth_key", "0_depth_pred", "0_depth_label",
        "0_input", "0_semseg_pred", "1_semseg_pred", "0_unknown_pred", "notes",
    ]  # fmt: skip
    files = [tmp_path / f"{name}.png" for name in names]
    rows = sample_rows(files, ["semseg", "depth", "task_palette"])
    assert [row.index for row in rows] == [0, 1]
    first, second = rows
    assert first.input == tmp_path / "0_input.png"
    assert [pair.task for pair in first.pairs] == ["semseg", "depth", "task_palette", "unknown"]
    depth = first.pairs[1]
    assert (depth.label, depth.prediction, depth.key) == tuple(
        tmp_path / f"0_depth_{kind}.png" for kind in ("label", "pred", "key")
    )
    assert first.pairs[0].label is None and first.pairs[0].key is None
    assert second.input == tmp_path / "1_input.png" and len(second.pairs) == 1
    table = markdown_samples(SampleSet(40, rows[:1]), tmp_path)
    assert "step 40" in table[0]
    assert table[2].startswith("| input | semseg: label, prediction | depth: label, prediction |")
    assert "![depth label](0_depth_label.png) ![depth prediction](0_depth_pred.png)<br>" in table[4]


def test_lines_lying_on_each_other_keep_their_own_markers_and_dashes(tmp_path) -> None:
    """Issue 24: two tasks with equal loss weights drew one visible line under a legend of
    two; now each line has its own marker, dash pattern and marker positions."""
    run = write_run(tmp_path, "mtl", {"semseg": {"miou": 0.5}, "depth": {"rmse": 1.0}}, "x")
    record = load_run_record(run, "test")
    events = [
        {"type": "train", "step": step, "losses": {"semseg": 1.0, "depth": 1.0},
         "weights": {"semseg": 0.5, "depth": 0.5}}
        for step in range(1, 41)
    ]  # fmt: skip
    record = replace(record, train_events=events)
    axes = blank_figure((4, 3)).subplots()
    _draw_weights(axes, record)
    semseg, depth = axes.get_lines()
    np.testing.assert_array_equal(semseg.get_ydata(), depth.get_ydata())
    assert semseg.get_marker() != depth.get_marker()
    assert semseg.get_linestyle() != depth.get_linestyle()
    assert semseg.get_markevery() != depth.get_markevery()  # markers at other points
    assert depth.get_markevery() == line_style(1, 40)["markevery"] == (1, 5)
    assert (
        len(
            {(style["marker"], style["linestyle"]) for style in map(line_style, range(4), [40] * 4)}
        )
        == 4
    )
