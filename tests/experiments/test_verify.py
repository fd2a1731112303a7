"""--verify: the committed numbers of a row, the same numbers of a retrained run, compared."""

import json
import math
import shutil
from pathlib import Path

import pytest

from densetasks.errors import DataError
from densetasks.experiments.report import build_report, load_group, load_records
from densetasks.experiments.verify import (
    DELTA_M,
    Comparison,
    VerifyLog,
    committed_numbers,
    compare,
    rerun_numbers,
    verify_report_run,
    verify_row,
)
from tests.experiments.test_report import write_run


def test_comparison_difference_and_tolerance_boundary() -> None:
    item = Comparison("Δm", committed=11.77, rerun=11.78)
    assert item.difference == pytest.approx(0.01)
    assert item.within(0.0100001)
    assert not item.within(0.0099)
    assert not Comparison("Δm", 1.0, math.nan).within(1e9)


def test_compare_pairs_by_name_and_refuses_other_names() -> None:
    pairs = compare({"a": 1.0, "b": 2.0}, {"b": 2.5, "a": 1.0})
    assert [(p.name, p.committed, p.rerun) for p in pairs] == [("a", 1.0, 1.0), ("b", 2.0, 2.5)]
    with pytest.raises(DataError, match=r"rerun gives \['a'\] but the results hold \['a', 'b'\]"):
        compare({"a": 1.0, "b": 2.0}, {"a": 1.0})


def test_verify_row_exit_status_and_printed_table(capsys: pytest.CaptureFixture) -> None:
    folders: list[Path] = []

    def retrain(folder: Path) -> dict[str, float]:
        assert folder.is_dir()
        folders.append(folder)
        return {"Δm": 15.94}

    assert verify_row("equal,seed=0", {"Δm": 15.94}, retrain, 0.01) == 0
    assert verify_row("equal,seed=0", {"Δm": 11.77}, retrain, 0.01) == 1
    printed = capsys.readouterr().out
    assert "| Δm | 11.77 | 15.94 | +4.17 | DIFFERS |" in printed
    assert "| Δm | 15.94 | 15.94 | +0 | ok |" in printed
    assert not any(folder.exists() for folder in folders)  # temporary, removed afterwards


@pytest.fixture
def seeded_report(tmp_path: Path) -> tuple[dict, Path]:
    """A report of one multi-task row over two seeds against two seeds of each baseline."""
    committed = tmp_path / "committed"
    baselines = []
    for seed, (miou, rmse) in enumerate([(0.50, 1.0), (0.60, 3.0)]):
        baselines += [
            write_run(
                committed,
                f"stl_semseg,seed={seed}",
                {"semseg": {"miou": miou}},
                "single_task",
                seed=seed,
            ),
            write_run(
                committed,
                f"stl_depth,seed={seed}",
                {"depth": {"rmse": rmse}},
                "single_task",
                seed=seed,
            ),
        ]
    rows = [
        write_run(
            committed,
            f"mtl,seed={seed}",
            {"semseg": {"miou": miou}, "depth": {"rmse": rmse}},
            "hard_sharing",
            seed=seed,
        )
        for seed, (miou, rmse) in enumerate([(0.55, 1.8), (0.66, 2.2)])
    ]
    report = build_report(
        [load_group("mtl", rows, "test")], load_records(baselines, "test"), "test"
    )
    return json.loads(json.dumps(report)), tmp_path


def test_a_seed_of_a_row_is_its_delta_m_against_the_baselines_mean(seeded_report) -> None:
    report, _ = seeded_report
    # baselines mean: miou 0.55, rmse 2.0; seed 1: (0.66 - 0.55) / 0.55 = +20 %,
    # (2.0 - 2.2) / 2.0 = -10 %: Δm +5 %
    assert committed_numbers(report, "mtl,seed=1") == {DELTA_M: pytest.approx(5.0)}


def test_identical_rerun_gives_the_committed_numbers(seeded_report) -> None:
    report, tmp_path = seeded_report
    rerun = tmp_path / "rerun"
    shutil.copytree(tmp_path / "committed" / "mtl,seed=0", rerun / "mtl,seed=0")
    numbers = rerun_numbers(report, rerun / "mtl,seed=0", "test")
    assert numbers == committed_numbers(report, "mtl,seed=0")
    # seed 0: (0.55 - 0.55) / 0.55 = 0, (2.0 - 1.8) / 2.0 = +10 %: Δm +5 %
    assert numbers[DELTA_M] == pytest.approx(5.0)


def test_changed_rerun_differs_by_the_hand_computed_amount(seeded_report, capsys) -> None:
    report, _ = seeded_report

    def retrain(folder: Path) -> Path:
        # mIoU 0.605 instead of 0.55: +10 % on semseg, so Δm +10 % instead of +5 %
        return write_run(
            folder,
            "mtl,seed=0",
            {"semseg": {"miou": 0.605}, "depth": {"rmse": 1.8}},
            "hard_sharing",
            seed=0,
        )

    assert verify_report_run("mtl,seed=0", report, retrain, tolerance=1.0) == 1
    assert "| Δm % (primary) | 5 | 10 | +5 | DIFFERS |" in capsys.readouterr().out
    assert verify_report_run("mtl,seed=0", report, retrain, tolerance=5.001) == 0


def test_single_runs_compare_their_primary_metrics_too(tmp_path: Path) -> None:
    stl = write_run(
        tmp_path, "stl_semseg", {"semseg": {"miou": 0.5, "pixel_acc": 0.8}}, "single_task"
    )
    mtl = write_run(tmp_path, "mtl", {"semseg": {"miou": 0.6, "pixel_acc": 0.9}}, "hard_sharing")
    report = json.loads(
        json.dumps(build_report(load_records([mtl], "test"), load_records([stl], "test"), "test"))
    )
    assert committed_numbers(report, "mtl") == {
        DELTA_M: pytest.approx(20.0),
        "semseg.miou": 0.6,
    }
    assert committed_numbers(report, "stl_semseg") == {"semseg.miou": 0.5}
    assert rerun_numbers(report, stl, "test") == {"semseg.miou": 0.5}
    assert rerun_numbers(report, mtl, "test") == committed_numbers(report, "mtl")


def test_unknown_run_and_seed_of_a_baseline_are_named(seeded_report) -> None:
    report, _ = seeded_report
    with pytest.raises(DataError, match="no run folder 'mtl,seed=7'.*holds mtl,seed=0"):
        committed_numbers(report, "mtl,seed=7")
    with pytest.raises(DataError, match="one seed of the semseg baseline"):
        committed_numbers(report, "stl_semseg,seed=0")
    with pytest.raises(SystemExit, match="^error: --verify mtl,seed=7: no run folder"):
        verify_report_run("mtl,seed=7", report, lambda folder: folder, 0.01)


def test_verify_log_appends_each_outcome_with_its_provenance(tmp_path: Path) -> None:
    log = VerifyLog(tmp_path / "verifications.json", {"commit": "abc", "cpu_capability": "X"})
    assert verify_row("run,seed=0", {"Δm": 11.77}, lambda _: {"Δm": 11.77}, 0.01, log) == 0
    assert verify_row("run,seed=1", {"Δm": 11.77}, lambda _: {"Δm": 10.97}, 0.01, log) == 1
    first, second = json.loads((tmp_path / "verifications.json").read_text())
    assert first["row"] == "run,seed=0" and first["reproduced"] is True
    assert first["provenance"] == {"commit": "abc", "cpu_capability": "X"}
    assert second["reproduced"] is False
    assert second["numbers"] == [
        {"name": "Δm", "committed": 11.77, "rerun": 10.97, "difference": pytest.approx(-0.8)}
    ]
