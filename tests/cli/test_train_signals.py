"""Real signals to a real ``densetasks train`` process, as a cluster sends them: the run stops
after the current step with ``last.pt`` written, exits 128 + the signal's number with one
line saying how to continue, and ``--resume`` ends exactly where an uninterrupted run ends.

Each test starts ``python -m densetasks.cli.main train`` in its own session, waits until
``events.jsonl`` shows a step (polling, never sleeping on a guess), signals, and resumes in
this process. Steps are tiny (32 px, the tiny encoder, one thread), so the run has 100 of
them: far more than the few the child takes between the test seeing a step and the signal
landing, even on a loaded machine (the child is slowed as much as the test).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import densetasks
from densetasks.cli.main import main
from densetasks.engine.checkpoint import load_checkpoint

STEPS = 100
CONFIG = {
    "seed": 5,
    "tasks": {"semseg": {}, "depth": {}},
    "data": {
        "options": {"n_train": 8, "n_val": 2, "n_test": 2, "size": [32, 32]},
        "batch_size": 2,
        "crop_size": [32, 32],
    },
    "model": {"architecture": "hard_sharing", "encoder": "tiny", "bottleneck": "none"},
    "balancer": {"name": "uncertainty"},
    "train": {
        "steps": STEPS,
        "optimizer": "adam",
        "lr": 3e-3,
        "eval_every": 40,
        "log_every": 1,
        "checkpoint_every": 1000,  # as in the issue: only the stop writes a checkpoint
        "images_every": 0,
    },
}
WAIT_S = 300
"""Generous: a fresh interpreter imports torch, timm and the package on a busy machine."""


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


@pytest.fixture(scope="module")
def uninterrupted(config_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    assert main(["--debug", "train", str(config_path), "--out", str(out)]) == 0
    torch.set_num_threads(threads)
    return out


def start_training(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    """``densetasks train CONFIG --out OUT EXTRA`` in a new session (its own process group,
    as a job step is), output to files beside the run."""
    root = str(Path(densetasks.__file__).parents[1])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = ["train", str(config), "--out", str(out), *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "densetasks.cli.main", *argv],
        stdout=(out.parent / "stdout.txt").open("w"),
        stderr=(out.parent / "stderr.txt").open("w"),
        env=env,
        start_new_session=True,
    )


def train_steps(run_dir: Path) -> list[int]:
    """The steps of the whole train events written so far (a line being written is skipped)."""
    path = run_dir / "events.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event["type"] == "train":
            steps.append(event["step"])
    return steps


def wait_for_step(process: subprocess.Popen, run_dir: Path, step: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while not train_steps(run_dir) or train_steps(run_dir)[-1] < step:
        assert process.poll() is None, f"training exited ({process.returncode}) before step {step}"
        assert time.monotonic() < deadline, f"no step {step} in {WAIT_S} s"
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be signalled"


def finish(process: subprocess.Popen) -> tuple[int, list[str]]:
    """Exit status and the ``densetasks:`` lines of standard error."""
    status = process.wait(timeout=WAIT_S)
    stderr = Path(process.args[process.args.index("--out") + 1]).parent / "stderr.txt"
    return status, [line for line in stderr.read_text().splitlines() if line.startswith("dense")]


def resume_in_process(config: Path, out: Path, *extra: str) -> None:
    assert main(["--debug", "train", str(config), "--out", str(out), *extra, "--resume"]) == 0


def assert_same_run(resumed: Path, whole: Path) -> None:
    """Same final weights, balancer, metrics files and train events as the uninterrupted run."""
    expected = load_checkpoint(whole / "checkpoints" / "last.pt")
    got = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert got["step"] == expected["step"] == STEPS
    for name, value in expected["model"].items():
        assert torch.equal(value, got["model"][name]), name
    assert torch.equal(got["balancer"]["log_variances"], expected["balancer"]["log_variances"])
    for split in ("val", "test"):
        name = f"metrics_{split}.json"
        assert json.loads((resumed / name).read_text()) == json.loads((whole / name).read_text())

    def without_speed(run_dir):
        lines = (run_dir / "events.jsonl").read_text().splitlines()
        return [{**e, "images_per_s": 0} for e in map(json.loads, lines) if e["type"] == "train"]

    assert without_speed(resumed) == without_speed(whole)


STOP_LINE = re.compile(
    r"densetasks: stopped by (SIG\w+) after step (\d+) \(saved (.+)\); "
    r"continue with: densetasks train (\S+) --out (\S+)(.*) --resume"
)


@pytest.mark.parametrize(
    ("signum", "group", "workers"),
    [
        (signal.SIGTERM, True, 2),  # a scheduler: every process of the job, loader workers too
        (signal.SIGINT, True, 1),  # Ctrl-C in a terminal: the foreground process group
        (signal.SIGUSR1, False, 0),  # Slurm's --signal=USR1@<s>: the job's main process
    ],
    ids=["SIGTERM-to-the-job", "SIGINT-ctrl-c", "SIGUSR1-slurm-warning"],
)
def test_a_signal_stops_after_the_step_and_resume_ends_like_an_uninterrupted_run(
    config_path, uninterrupted, tmp_path, signum, group, workers
):
    out = tmp_path / "run"
    workers_option = ["--set", f"data.workers={workers}"]
    process = start_training(config_path, out, *workers_option)
    wait_for_step(process, out, 3)
    (os.killpg if group else os.kill)(process.pid, signum)
    status, lines = finish(process)

    assert status == 128 + signum  # 143, 130, 138: what a shell reports for death by it
    name = signal.Signals(signum).name
    assert (
        lines[0] == f"densetasks: {name}: stopping after this step (a second signal stops at once)"
    )
    assert len(lines) == 2, lines
    stop = STOP_LINE.fullmatch(lines[1])
    assert stop, lines[1]
    stopped_at = int(stop[2])
    assert stop[1] == name and 3 <= stopped_at < STEPS
    assert (stop[3], stop[4], stop[5]) == (
        str(out / "checkpoints/last.pt"),
        str(config_path),
        str(out),
    )
    assert stop[6] == " --set data.workers=" + str(workers)
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == stopped_at
    assert train_steps(out)[-1] == stopped_at

    resume_in_process(config_path, out, *workers_option)
    assert_same_run(out, uninterrupted)


def test_a_second_signal_stops_at_once_and_leaves_every_file_whole(
    config_path, uninterrupted, tmp_path
):
    """SIGUSR1 then SIGTERM: two different signals, so the kernel cannot merge them into one,
    and Python handles SIGUSR1 (10) before SIGTERM (15). Checkpoints every 2 steps, so the
    second signal may land in a write; whatever it cut leaves the previous checkpoint."""
    out = tmp_path / "run"
    often = ["--set", "train.checkpoint_every=2"]
    process = start_training(config_path, out, *often)
    wait_for_step(process, out, 3)
    os.kill(process.pid, signal.SIGUSR1)
    os.kill(process.pid, signal.SIGTERM)
    status, lines = finish(process)

    assert status == 128 + signal.SIGTERM
    assert lines[-1] == (
        "densetasks: stopped at once by a second signal (SIGTERM); continue with: densetasks "
        f"train {config_path} --out {out} --set train.checkpoint_every=2 --resume"
    )
    checkpoints = out / "checkpoints"
    assert not [path.name for path in checkpoints.iterdir() if path.name.endswith(".tmp")]
    kept = load_checkpoint(checkpoints / "last.pt")["step"]  # checks size and SHA-256
    assert kept % 2 == 0 and kept <= train_steps(out)[-1]

    resume_in_process(config_path, out, *often)
    assert_same_run(out, uninterrupted)
