"""The Ray backend of sweeps against a real local Ray instance: same runs as the local backend.

The module's Ray instance (2 CPUs, no dashboard) is started once and shut down after; the
backend finds it already connected and leaves it open. Without Ray installed (the optional
extra ``densetasks[ray]``) the Ray tests are skipped and only the flag checks run.
"""

import json
import sys
from pathlib import Path

import pytest

from densetasks.errors import ConfigError, TrainingError
from densetasks.experiments.sweep import plan_grid, run_sweep
from densetasks.experiments.sweep_ray import ray_backend

NAMES = ["train.lr=0.001", "train.lr=0.002"]


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance for the module: 2 CPUs, no dashboard, worker output not echoed."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def sweep_argv(sweep_config_file: Path, out: Path) -> list[str]:
    return [str(sweep_config_file), "--grid", "train.lr=0.001,0.002", "--out", str(out)]


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return [(event["step"], event["total"]) for event in events if event["type"] == "train"]


def run_files(run_dir: Path) -> list[str]:
    """The run's files, bar TensorBoard's (named by host and time)."""
    return sorted(
        str(path.relative_to(run_dir))
        for path in run_dir.rglob("*")
        if path.is_file() and "tensorboard" not in path.parts
    )


@pytest.mark.usefixtures("one_thread")
def test_ray_backend_trains_the_same_runs_as_the_local_backend(
    ray_instance, sweep_config_file, sweep_cli, tmp_path
):
    assert (
        sweep_cli([*sweep_argv(sweep_config_file, tmp_path / "local"), "--backend", "local"]) == 0
    )
    assert sweep_cli([*sweep_argv(sweep_config_file, tmp_path / "ray"), "--backend", "ray"]) == 0
    local = json.loads((tmp_path / "local" / "sweep.json").read_text())
    remote = json.loads((tmp_path / "ray" / "sweep.json").read_text())
    assert [run["name"] for run in remote["runs"]] == NAMES
    for local_run, ray_run in zip(local["runs"], remote["runs"], strict=True):
        assert ray_run["overrides"] == local_run["overrides"]
        assert ray_run["pareto"] == local_run["pareto"]
        for task, metrics in local_run["metrics"].items():
            assert ray_run["metrics"][task] == pytest.approx(metrics, rel=1e-4)
    for name in NAMES:
        local_dir, ray_dir = tmp_path / "local" / "runs" / name, tmp_path / "ray" / "runs" / name
        assert run_files(ray_dir) == run_files(local_dir)
        assert (ray_dir / "config.yaml").read_text() == (local_dir / "config.yaml").read_text()
        ray_steps, ray_totals = zip(*train_losses(ray_dir), strict=True)
        local_steps, local_totals = zip(*train_losses(local_dir), strict=True)
        assert ray_steps == local_steps
        assert ray_totals == pytest.approx(local_totals, rel=1e-4)


def test_ray_backend_skips_finished_runs_and_resumes_an_interrupted_one(
    ray_instance, sweep_config_file, sweep_cli, tmp_path, capsys
):
    out = tmp_path / "sweep"
    argv = [*sweep_argv(sweep_config_file, out), "--backend", "ray", "--cpus-per-run", "1"]
    assert sweep_cli(argv) == 0
    interrupted, finished = (out / "runs" / name for name in NAMES)
    stamp = (finished / "metrics_val.json").stat().st_mtime_ns
    for metrics in interrupted.glob("metrics_*.json"):
        metrics.unlink()  # killed after its last checkpoint, before the final metrics
    capsys.readouterr()
    assert sweep_cli([*argv, "--split", "test"]) == 0
    printed = capsys.readouterr().out
    assert f"sweep: {finished.name} already finished, skipped" in printed
    assert f"sweep: {interrupted.name} finished" in printed
    assert (finished / "metrics_val.json").stat().st_mtime_ns == stamp
    # A fresh start would have refused the folder (it holds last.pt): the run resumed, and
    # trained no step twice.
    assert (interrupted / "metrics_val.json").is_file()
    assert [step for step, _ in train_losses(interrupted)] == [1, 2, 3, 4]
    assert json.loads((out / "sweep.json").read_text())["split"] == "test"


def test_a_failed_ray_run_is_named_with_its_error_and_the_others_finish(
    ray_instance, sweep_config, tmp_path
):
    grid = {"model.init_from": [None, str(tmp_path / "missing")]}
    planned = plan_grid(sweep_config, grid, tmp_path / "runs")
    lines: list[str] = []
    with pytest.raises(TrainingError) as raised:
        run_sweep(planned, log=lines.append, backend=ray_backend())
    failed = planned[1].name
    message = str(raised.value)
    assert message.startswith(f"1 of 2 sweep runs failed: {failed} (DataError: ")
    assert "missing" in message
    assert any(line.startswith(f"sweep: {failed} failed: DataError: ") for line in lines)
    assert f"sweep: {planned[0].name} finished" in lines
    assert (planned[0].run_dir / "metrics_val.json").is_file()


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--address", "auto"], "--address: only for --backend ray"),
        (["--cpus-per-run", "2", "--gpus-per-run", "1"], "--cpus-per-run, --gpus-per-run: only"),
        (["--backend", "ray", "--jobs", "2"], "--jobs is for --backend local"),
        (["--backend", "ray", "--cpus-per-run", "0"], "needs CPUs > 0"),
    ],
)
def test_backend_flags_are_checked_before_anything_trains(
    sweep_config_file, sweep_cli, tmp_path, flags, fragment
):
    with pytest.raises(ConfigError, match=fragment):
        sweep_cli([*sweep_argv(sweep_config_file, tmp_path / "s"), *flags])
    assert not (tmp_path / "s").exists()


def test_without_ray_the_backend_says_how_to_install_it(
    sweep_config_file, sweep_cli, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'densetasks\[ray\]'"):
        sweep_cli([*sweep_argv(sweep_config_file, tmp_path / "s"), "--backend", "ray"])
