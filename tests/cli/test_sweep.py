"""``densetasks sweep`` end to end: 2 combinations x 4 steps of the tiny encoder at 32 px."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from densetasks.errors import ConfigError
from densetasks.experiments import sweep as sweep_module

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sweep_trains_each_combination_writes_results_and_resumes(
    sweep_config_file, sweep_cli, tmp_path, capsys
):
    out = tmp_path / "sweep"
    argv = [
        str(sweep_config_file),
        "--grid",
        "balancer.weights.depth=0.1,10",
        "--set",
        "balancer.weights.semseg=2",
        "--out",
        str(out),
    ]
    assert sweep_cli(argv) == 0
    names = ["balancer.weights.depth=0.1", "balancer.weights.depth=10"]
    assert sorted(path.name for path in (out / "runs").iterdir()) == names
    for name, depth_weight in zip(names, [0.1, 10.0], strict=True):
        resolved = yaml.safe_load((out / "runs" / name / "config.yaml").read_text())
        assert resolved["balancer"]["weights"] == {"semseg": 2.0, "depth": depth_weight}
    stored = json.loads((out / "sweep.json").read_text())
    assert [run["name"] for run in stored["runs"]] == names
    assert [run["overrides"] for run in stored["runs"]] == [
        {"balancer.weights.depth": 0.1},
        {"balancer.weights.depth": 10},
    ]
    assert set(stored["runs"][0]["metrics"]) == {"semseg", "depth"}
    assert any(run["pareto"] for run in stored["runs"])
    table = [line for line in (out / "sweep.md").read_text().splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 2  # header and one row per combination
    assert (out / "sweep.png").stat().st_size > 1000

    # A second call trains nothing: both runs already have their final metrics.
    finished = {
        name: (out / "runs" / name / "metrics_val.json").stat().st_mtime_ns for name in names
    }
    shutil.copytree(out / "runs" / names[0], tmp_path / "uncertainty")
    capsys.readouterr()
    assert sweep_cli([*argv, "--mark", str(tmp_path / "uncertainty")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("already finished, skipped") == 2
    assert "| uncertainty (marked) |" in printed
    for name, stamp in finished.items():
        assert (out / "runs" / name / "metrics_val.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_parallel_jobs_train_every_combination(sweep_config_file, sweep_cli, tmp_path):
    """Spawned processes each import torch: slow on a busy 2-core machine, hence ``slow``."""
    out = tmp_path / "sweep"
    argv = [
        str(sweep_config_file),
        "--grid",
        "train.lr=0.001,0.002",
        "--out",
        str(out),
        "--jobs",
        "2",
    ]
    assert sweep_cli(argv) == 0
    stored = json.loads((out / "sweep.json").read_text())
    assert [run["name"] for run in stored["runs"]] == ["train.lr=0.001", "train.lr=0.002"]
    for name in ("train.lr=0.001", "train.lr=0.002"):
        steps = [
            json.loads(line)["step"]
            for line in (out / "runs" / name / "events.jsonl").read_text().splitlines()
            if json.loads(line)["type"] == "train"
        ]
        assert steps == [1, 2, 3, 4]


def test_sweep_resumes_an_interrupted_run_and_evaluates_the_asked_split(
    sweep_config_file, sweep_cli, tmp_path
):
    out = tmp_path / "sweep"
    argv = [str(sweep_config_file), "--grid", "train.lr=0.001", "--out", str(out)]
    assert sweep_cli(argv) == 0
    run_dir = out / "runs" / "train.lr=0.001"
    # Simulate a kill after the last checkpoint: the final metrics are missing.
    for metrics in run_dir.glob("metrics_*.json"):
        metrics.unlink()
    assert sweep_cli([*argv, "--split", "test"]) == 0
    assert (run_dir / "metrics_val.json").is_file() and (run_dir / "metrics_test.json").is_file()
    assert json.loads((out / "sweep.json").read_text())["split"] == "test"


def test_a_bad_grid_key_fails_before_training(sweep_config_file, sweep_cli, tmp_path):
    with pytest.raises(ConfigError, match=r"train\.stepz"):
        sweep_cli(
            [str(sweep_config_file), "--grid", "train.stepz=1,2", "--out", str(tmp_path / "s")]
        )
    assert not (tmp_path / "s").exists()


def test_a_bad_task_option_fails_before_training(sweep_config_file, sweep_cli, tmp_path):
    """Task options are checked by the task itself: the sweep builds every run's tasks while
    planning, so a bad one stops the sweep before any run trains."""
    out = tmp_path / "s"
    grid = ["--grid", "tasks.depth.primary_metric=rmse,no_such_metric"]
    message = r"sweep run .*no_such_metric: depth\.primary_metric must be"
    with pytest.raises(ConfigError, match=message):
        sweep_cli([str(sweep_config_file), *grid, "--out", str(out)])
    assert not (out / "runs").exists()


def fake_train(config: dict, run_dir: str, threads: int | None) -> None:
    """Stands in for training: writes the files a finished run has, metrics from the seed."""
    path = Path(run_dir)
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    stored = {
        "step": 4,
        "metrics": {"semseg": {"miou": 0.1 * config["seed"]}, "depth": {"rmse": 1.0}},
        "higher_is_better": {"semseg": {"miou": True}, "depth": {"rmse": False}},
        "primary": {"semseg": "miou", "depth": "rmse"},
    }
    (path / "metrics_val.json").write_text(json.dumps(stored))


def test_seeds_train_each_combination_once_per_seed_and_resume(
    sweep_config_file, sweep_cli, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(sweep_module, "train_one", fake_train)
    out = tmp_path / "sweep"
    argv = [str(sweep_config_file), "--grid", "train.lr=0.1,0.2", "--out", str(out)]
    assert sweep_cli([*argv, "--seeds", "0", "1"]) == 0
    names = [f"train.lr={lr},seed={seed}" for lr in (0.1, 0.2) for seed in (0, 1)]
    assert sorted(path.name for path in (out / "runs").iterdir()) == names
    for name in names:
        resolved = yaml.safe_load((out / "runs" / name / "config.yaml").read_text())
        assert f"seed={resolved['seed']}" in name
    stored = json.loads((out / "sweep.json").read_text())
    assert stored["keys"] == ["train.lr", "seed"]
    assert [run["overrides"]["seed"] for run in stored["runs"]] == [0, 1, 0, 1]
    capsys.readouterr()
    assert sweep_cli([*argv, "--seeds", "0", "1", "2"]) == 0  # one more seed: only it trains
    assert capsys.readouterr().out.count("already finished, skipped") == 4
    assert (out / "runs" / "train.lr=0.2,seed=2" / "metrics_val.json").is_file()


def test_sweep_needs_a_grid_or_seeds(sweep_config_file, sweep_cli, tmp_path):
    with pytest.raises(ConfigError, match="--grid KEY=V1,V2,... or --seeds"):
        sweep_cli([str(sweep_config_file), "--out", str(tmp_path / "s")])
