"""What a cluster does to a real ``densetasks train`` process: signals (the run stops after
the current step with ``last.pt`` written, exits 128 + the signal's number with one line
saying how to continue), ``kill -9``, and a full disk (a file size limit, a full tmpfs).
Each time ``--resume`` ends exactly where an uninterrupted run ends: weights, metrics,
events and TensorBoard points.

Each test starts ``python -m densetasks.cli.main train`` in its own session, waits until
``events.jsonl`` shows a step (polling, never sleeping on a guess), acts, and resumes in
this process. Steps are tiny (32 px, the tiny encoder, one thread), so the run has 100 of
them: far more than the few the child takes between the test seeing a step and the signal
landing, even on a loaded machine (the child is slowed as much as the test).
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

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


pytestmark = pytest.mark.usefixtures("one_thread")


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


LIMITED = (
    "import os, resource, sys; size = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (size, size)); "
    "os.execv(sys.executable, [sys.executable, '-m', 'densetasks.cli.main', *sys.argv[2:]])"
)
"""Runs the command with files limited to ``argv[1]`` bytes (Python ignores SIGXFSZ, so a
write past the limit fails with EFBIG as a write to a full disk fails with ENOSPC)."""


def child_environment() -> dict[str, str]:
    root = str(Path(densetasks.__file__).parents[1])
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
    }


def start_training(
    config: Path, out: Path, *extra: str, file_size_limit: int | None = None
) -> subprocess.Popen:
    """``densetasks train CONFIG --out OUT EXTRA`` in a new session (its own process group,
    as a job step is), output to files beside the run."""
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = ["train", str(config), "--out", str(out), *extra]
    if file_size_limit is None:
        command = [sys.executable, "-m", "densetasks.cli.main", *argv]
    else:
        command = [sys.executable, "-c", LIMITED, str(file_size_limit), *argv]
    return subprocess.Popen(
        command,
        stdout=(out.parent / "stdout.txt").open("w"),
        stderr=(out.parent / "stderr.txt").open("w"),
        env=child_environment(),
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


def finish(process: subprocess.Popen, folder: Path) -> tuple[int, list[str]]:
    """Exit status and the ``densetasks:`` lines of standard error (``folder/stderr.txt``)."""
    status = process.wait(timeout=WAIT_S)
    lines = (folder / "stderr.txt").read_text().splitlines()
    return status, [line for line in lines if line.startswith("densetasks:")]


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
    assert tensorboard_points(resumed) == tensorboard_points(whole)


def tensorboard_points(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag's ``(step, value)`` points as TensorBoard reads the run's files
    (later files' ``purge_step`` drops earlier points), speed excepted."""
    reader = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    reader.Reload()
    return {
        tag: [(point.step, point.value) for point in reader.Scalars(tag)]
        for tag in reader.Tags()["scalars"]
        if not tag.startswith("speed/")
    }


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
    status, lines = finish(process, tmp_path)

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
    status, lines = finish(process, tmp_path)

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


def test_kill_9_loses_only_the_steps_since_the_last_checkpoint(
    config_path, uninterrupted, tmp_path
):
    """SIGKILL gives no chance to save: the run resumes from the periodic checkpoint, cuts
    the events (and TensorBoard points) the killed run wrote after it, and ends the same."""
    out = tmp_path / "run"
    every = ["--set", "train.checkpoint_every=10"]
    process = start_training(config_path, out, *every)
    wait_for_step(process, out, 13)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=WAIT_S) == -signal.SIGKILL
    kept = load_checkpoint(out / "checkpoints" / "last.pt")["step"]
    assert kept % 10 == 0 and kept < train_steps(out)[-1]

    resume_in_process(config_path, out, *every)
    assert_same_run(out, uninterrupted)


def killed_at_step_25(config: Path, out: Path, kill_at_step) -> None:
    """A run of :data:`CONFIG` with checkpoints every 20 steps, killed as step 26 starts."""
    with kill_at_step(25):
        main(["--debug", "train", str(config), "--out", str(out), *EVERY_20])
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 20


EVERY_20 = ["--set", "train.checkpoint_every=20"]
FULL_DISK = re.compile(
    r"densetasks: error: cannot write (\S+/checkpoints/(?:best|last)\.pt): (.+); it needs "
    r"about 1\.9 MiB, (.+) \(the previous file of that name, if any, is unchanged\); once there is "
    r"room, continue from the last checkpoint with --resume"
)


def assert_stopped_for_want_of_room(
    process: subprocess.Popen, out: Path, written_as: Path, reason: str
) -> str:
    """Exit status 2, one line naming the checkpoint (under ``written_as``), its size and the
    room; ``out/checkpoints/last.pt`` still step 20 (checked against its record) and no
    temporary file. Returns the room."""
    status, lines = finish(process, out.parent)
    assert status == 2 and len(lines) == 1, lines
    full = FULL_DISK.fullmatch(lines[0])
    assert full and full[2] == reason, lines[0]
    assert full[1].startswith(str(written_as))
    checkpoints = out / "checkpoints"
    assert load_checkpoint(checkpoints / "last.pt")["step"] == 20
    assert not [path.name for path in checkpoints.iterdir() if path.name.endswith(".tmp")]
    return full[3]


def test_a_file_size_limit_stops_with_the_file_and_its_size_and_keeps_the_checkpoint(
    config_path, uninterrupted, tmp_path, kill_at_step
):
    out = tmp_path / "run"
    killed_at_step_25(config_path, out, kill_at_step)
    limit = 1024**2  # the checkpoints are 1.9 MiB; events and TensorBoard files stay under
    process = start_training(config_path, out, *EVERY_20, "--resume", file_size_limit=limit)
    room = assert_stopped_for_want_of_room(process, out, out, "File too large")
    assert room == "the file size limit (ulimit -f) is 1.0 MiB"

    resume_in_process(config_path, out, *EVERY_20)
    assert_same_run(out, uninterrupted)


def private_tmpfs_works() -> bool:
    probe = ["unshare", "--mount", "--map-root-user", "sh", "-c", "mount -t tmpfs none /mnt"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(
    not shutil.which("unshare") or not private_tmpfs_works(),
    reason="needs a private mount namespace (unshare --mount) to mount a small tmpfs",
)
def test_a_full_disk_stops_with_the_file_and_its_size_and_keeps_the_checkpoint(
    config_path, uninterrupted, tmp_path, kill_at_step
):
    """A real ENOSPC: the run folder is copied onto a tmpfs with 1 MiB to spare (mounted in
    a private mount namespace, so nothing outside sees it), resumed there, and copied back
    out when the run has stopped."""
    out = tmp_path / "run"
    killed_at_step_25(config_path, out, kill_at_step)
    used = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    size_kib = used // 1024 + 1024 + 64  # page rounding and folders take a little
    disk = tmp_path / "disk"
    disk.mkdir()
    command = [sys.executable, "-m", "densetasks.cli.main", "train", str(config_path)]
    train = shlex.join([*command, "--out", str(disk), *EVERY_20, "--resume"])
    disk_q, out_q = shlex.quote(str(disk)), shlex.quote(str(out))
    script = (
        f"mount -t tmpfs -o size={size_kib}k tmpfs {disk_q} && cp -a {out_q}/. {disk_q}/ && "
        f"{{ {train}; status=$?; }}; rm -rf {out_q} && cp -a {disk_q} {out_q}; exit $status"
    )
    process = subprocess.Popen(
        ["unshare", "--mount", "--map-root-user", "sh", "-c", script],
        stdout=(tmp_path / "stdout.txt").open("w"),
        stderr=(tmp_path / "stderr.txt").open("w"),
        env=child_environment(),
    )
    room = assert_stopped_for_want_of_room(process, out, disk, "No space left on device")
    assert re.fullmatch(r"[\d.]+ (KiB|MiB) free on its disk", room), room

    resume_in_process(config_path, out, *EVERY_20)
    assert_same_run(out, uninterrupted)
