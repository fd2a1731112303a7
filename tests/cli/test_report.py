"""``densetasks report`` through its parser: files written, table printed, clear errors."""

import argparse
import json
from pathlib import Path

import pytest

from densetasks.cli import report as report_command
from densetasks.errors import ConfigError, DataError, DiskFullError


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="densetasks")
    report_command.add_parser(parser.add_subparsers())
    return parser.parse_args(["report", *argv])


def write_metrics_only_run(root: Path, name: str, metrics: dict[str, float], split: str) -> Path:
    """A run directory with only ``metrics_<split>.json``: tasks come from the metrics."""
    run_dir = root / name
    run_dir.mkdir()
    stored = {
        "step": 5,
        "split": split,
        "metrics": {task: {"score": value} for task, value in metrics.items()},
        "higher_is_better": {task: {"score": True} for task in metrics},
        "primary": {task: "score" for task in metrics},
    }
    (run_dir / f"metrics_{split}.json").write_text(json.dumps(stored))
    return run_dir


def test_report_command_prints_table_and_writes_files(tmp_path: Path, capsys) -> None:
    base_a = write_metrics_only_run(tmp_path, "a_only", {"a": 2.0}, "val")
    base_b = write_metrics_only_run(tmp_path, "b_only", {"b": 4.0}, "val")
    both = write_metrics_only_run(tmp_path, "both", {"a": 3.0, "b": 3.0}, "val")
    out = tmp_path / "out"
    args = parse(
        [str(both), "--baseline", str(base_a), str(base_b), "--split", "val", "--out", str(out)]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    # a: +50 %, b: -25 % -> Δm = +12.5 %
    assert "+12.50" in printed
    assert {path.name for path in out.iterdir()} >= {"report.md", "report.html", "report.json"}


def test_a_full_disk_names_the_file_and_leaves_the_previous_report(
    tmp_path: Path, file_size_limit
) -> None:
    base_a = write_metrics_only_run(tmp_path, "a_only", {"a": 2.0}, "val")
    both = write_metrics_only_run(tmp_path, "both", {"a": 3.0}, "val")
    out = tmp_path / "out"
    args = parse([str(both), "--baseline", str(base_a), "--split", "val", "--out", str(out)])
    assert args.func(args) == 0
    before = {path.name: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    (both / "metrics_val.json").write_text(
        (both / "metrics_val.json").read_text().replace("3.0", "4.0")
    )
    with file_size_limit(1024), pytest.raises(DiskFullError) as raised:
        args.func(args)
    failed = Path(str(raised.value).split(":")[0].removeprefix("cannot write "))
    assert failed.parent == out and len(before[failed.name]) > 1024
    assert "File too large; it needs" in str(raised.value)
    after = {path.name: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    assert after[failed.name] == before[failed.name] and set(after) == set(before)


def test_report_command_needs_evaluated_runs(tmp_path: Path) -> None:
    (tmp_path / "fresh").mkdir()
    args = parse([str(tmp_path / "fresh"), "--out", str(tmp_path / "out")])
    with pytest.raises(DataError, match="run `densetasks eval"):
        args.func(args)


def test_report_command_requires_out(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        parse([str(tmp_path)])


def write_seed_run(root: Path, name: str, seed: int, metrics: dict[str, float]) -> Path:
    """:func:`write_metrics_only_run` plus a config that holds the seed."""
    run_dir = write_metrics_only_run(root, name, metrics, "test")
    (run_dir / "config.yaml").write_text(f"seed: {seed}\ntasks: {{{', '.join(metrics)}}}\n")
    return run_dir


def test_report_command_groups_seeds_into_one_row(tmp_path: Path, capsys) -> None:
    base_a = [write_seed_run(tmp_path, f"a{s}", s, {"a": v}) for s, v in ((0, 1.0), (1, 3.0))]
    both = [write_seed_run(tmp_path, f"ab{s}", s, {"a": v, "b": v}) for s, v in enumerate((2, 4))]
    out = tmp_path / "out"
    argv = ["--group", "mtl", *map(str, both), "--baseline", *map(str, base_a), "--out", str(out)]
    args = parse(argv)
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    # a against the baselines' mean 2: +0 % and +100 % -> Δm 50 ± 70.71 (b has no baseline)
    assert "mtl (n=2)" in printed and "single-task (n=2)" in printed
    assert "+50.00 ± 70.71" in printed
    stored = json.loads((out / "report.json").read_text())
    assert stored["runs"][0]["seeds"] == [0, 1]


def test_report_command_refuses_a_group_without_a_name(tmp_path: Path) -> None:
    run_dir = write_seed_run(tmp_path, "r0", 0, {"a": 1.0})
    args = parse(["--group", str(run_dir), "--out", str(tmp_path / "out")])
    with pytest.raises(ConfigError, match="the first value is the row's name"):
        args.func(args)
    with pytest.raises(ConfigError, match="at least one RUN_DIR or --group"):
        empty = parse(["--out", str(tmp_path / "out")])
        empty.func(empty)
