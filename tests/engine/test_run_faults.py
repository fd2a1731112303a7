"""A run against the faults of a long job, in this process: a torn ``last.pt``, a kill that
leaves log lines past the checkpoint, ``--resume`` with no checkpoint yet, an unreadable
validation image, and memory over many evaluations. Each resumed run must end as the
uninterrupted one does (weights, metrics, events, TensorBoard points)."""

import ctypes
import json
import os
import re
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import densetasks.engine.run as run_module
from densetasks.cli.main import main
from densetasks.engine.checkpoint import load_checkpoint

STEPS = 10
CONFIG = {
    "seed": 7,
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
        "eval_every": 5,
        "log_every": 1,
        "checkpoint_every": 2,
        "images_every": 0,
    },
}


pytestmark = pytest.mark.usefixtures("one_thread")


def command(argv: list[str]) -> int:
    return main(["--debug", *argv])


def write_config(folder: Path, config: dict = CONFIG, **train) -> Path:
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump({**config, "train": {**config["train"], **train}}))
    return path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("whole")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    assert command(["train", str(write_config(folder)), "--out", str(folder / "run")]) == 0
    torch.set_num_threads(threads)
    return folder / "run"


def train_events(run_dir: Path) -> list[dict]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [{**e, "images_per_s": 0} for e in map(json.loads, lines) if e["type"] == "train"]


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


def assert_same_run(resumed: Path, whole: Path) -> None:
    expected = load_checkpoint(whole / "checkpoints" / "last.pt")
    got = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert got["step"] == expected["step"]
    for name, value in expected["model"].items():
        assert torch.equal(value, got["model"][name]), name
    for name in ("metrics_val.json", "metrics_test.json"):
        assert json.loads((resumed / name).read_text()) == json.loads((whole / name).read_text())
    assert train_events(resumed) == train_events(whole)
    assert tensorboard_points(resumed) == tensorboard_points(whole)


def test_a_torn_last_checkpoint_falls_back_to_the_previous_one_and_the_run_ends_the_same(
    tmp_path, uninterrupted, kill_at_step, capsys
):
    path = write_config(tmp_path)
    out = tmp_path / "run"
    with kill_at_step(9):
        command(["train", str(path), "--out", str(out)])
    last = out / "checkpoints" / "last.pt"
    size = last.stat().st_size
    os.truncate(last, size // 3)  # a torn write: a third of step 8's checkpoint
    capsys.readouterr()

    assert command(["train", str(path), "--out", str(out), "--resume"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines()[0] == (
        f"densetasks: warning: checkpoint {last} is damaged: it is {size // 3} bytes, {size} "
        "were written (a torn or cut file); using the previous checkpoint "
        f"{out / 'checkpoints' / 'last.prev.pt'} (step 6)"
    )
    assert f"resuming {out} at step 6" in captured.out
    assert_same_run(out, uninterrupted)


def test_events_and_tensorboard_are_appended_on_resume_without_repeats_or_gaps(
    tmp_path, uninterrupted, kill_at_step
):
    """Killed as step 8 starts, with the checkpoint at step 4 and a line torn by the kill:
    the resumed run cuts the events after step 4 in place, keeps every byte before, and adds
    a TensorBoard file instead of rewriting one."""
    path = write_config(tmp_path, checkpoint_every=4)
    out = tmp_path / "run"
    with kill_at_step(7):
        command(["train", str(path), "--out", str(out)])
    events = out / "events.jsonl"
    assert [e["step"] for e in train_events(out)] == [1, 2, 3, 4, 5, 6, 7]
    with events.open("a") as stream:
        stream.write('{"type": "train", "step": 8, "los')  # the kill cut this line
    kept = load_checkpoint(out / "checkpoints" / "last.pt")["events_bytes"]
    before = events.read_bytes()[:kept]
    assert before.endswith(b"\n") and json.loads(before.splitlines()[-1])["step"] == 4
    first_files = {p.name: p.read_bytes() for p in (out / "tensorboard").iterdir()}

    assert command(["train", str(path), "--out", str(out), "--resume"]) == 0
    assert events.read_bytes().startswith(before)
    after = {p.name: p.read_bytes() for p in (out / "tensorboard").iterdir()}
    assert len(after) == len(first_files) + 1
    assert all(after[name] == data for name, data in first_files.items())
    assert_same_run(out, uninterrupted)


def test_resume_without_a_checkpoint_yet_starts_afresh(tmp_path, uninterrupted, capsys):
    """A scheduler passes ``--resume`` every time, also before the first checkpoint."""
    path = write_config(tmp_path, checkpoint_every=1000)
    out = tmp_path / "run"
    assert command(["train", str(path), "--out", str(out), "--resume"]) == 0
    assert f"--resume: {out / 'checkpoints'} holds no checkpoint yet; starting" in (
        capsys.readouterr().out
    )
    assert_same_run(out, uninterrupted)


def write_folder_data(root: Path) -> None:
    for split, count, seed in (("train", 8, 0), ("val", 3, 1), ("test", 2, 2)):
        argv = ["data", "synth", "--out", str(root), "--n", str(count), "--size", "32x32"]
        assert command([*argv, "--seed", str(seed), "--split", split]) == 0


def test_an_unreadable_validation_image_names_the_file_and_the_run_resumes_exactly(
    tmp_path, capsys
):
    root = tmp_path / "data"
    write_folder_data(root)
    data = {key: value for key, value in CONFIG["data"].items() if key != "options"}
    config = {**CONFIG, "data": {**data, "dataset": "folder", "root": str(root)}}
    path = write_config(tmp_path, config, checkpoint_every=1000)
    assert command(["train", str(path), "--out", str(tmp_path / "whole")]) == 0

    val_images = sorted((root / "images").glob("*"))
    val_names = (root / "splits" / "val.txt").read_text().split()
    image = next(p for p in val_images if p.stem == val_names[1])
    good = image.read_bytes()
    image.write_bytes(good[: len(good) // 2])  # a copy cut short
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", str(path), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert re.fullmatch(
        rf"densetasks: error: evaluation at step 5: {re.escape(str(image))}: cannot read image "
        r"\(.+\); the run is saved as it was before this evaluation: fix the file and "
        r"continue with --resume",
        error,
    ), error
    saved = load_checkpoint(out / "checkpoints" / "last.pt")
    assert saved["step"] == 5 and saved["pending_validation"] is True

    image.write_bytes(good)
    assert command(["train", str(path), "--out", str(out), "--resume"]) == 0
    whole = tmp_path / "whole"
    expected = load_checkpoint(whole / "checkpoints" / "last.pt")["model"]
    got = load_checkpoint(out / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(value, got[name]) for name, value in expected.items())
    evals = [
        (e["step"], e["metrics"])
        for e in map(json.loads, (out / "events.jsonl").read_text().splitlines())
        if e["type"] == "eval"
    ]
    expected_evals = [
        (e["step"], e["metrics"])
        for e in map(json.loads, (whole / "events.jsonl").read_text().splitlines())
        if e["type"] == "eval"
    ]
    assert evals == expected_evals and [step for step, _ in evals][:2] == [5, 10]
    assert train_events(out) == train_events(whole)
    for name in ("metrics_val.json", "metrics_test.json"):
        assert json.loads((out / name).read_text()) == json.loads((whole / name).read_text())


PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
EVALUATIONS = 70
WARM_UP = 20
GROWTH_BOUND = 2 * 1024**2
"""Resident memory may grow by at most 2 MiB over the 50 evaluations after the warm-up,
about 40 KiB an evaluation. Measured (2-core machine): a one-off 1.7 MiB at the first
pictures (evaluation 10), then 0.21 MiB over the 50 measured ones."""
PLANTED_LEAK = 128 * 1024
"""A leak of 128 KiB an evaluation (32-bit floats kept, as a list of every evaluation's
outputs would keep them) grows it by 6.4 MiB (measured), over three times the bound."""


def resident_bytes() -> int:
    """This process's resident memory once the C heap's free memory is given back
    (glibc's ``malloc_trim``), so that what stays is what is still held."""
    ctypes.CDLL(None).malloc_trim(0)
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * PAGE_BYTES


def growth_over_evaluations(tmp_path: Path, monkeypatch, leak_bytes: int) -> int:
    """Train with an evaluation after every step (pictures every 10) and return how much
    the resident memory grew between the end of evaluation ``WARM_UP`` and of the last."""
    real_evaluate = run_module.evaluate
    resident, kept = [], []

    def measured(*args, **kwargs):
        evaluation = real_evaluate(*args, **kwargs)
        if leak_bytes:
            kept.append(torch.ones(leak_bytes // 4))  # written, so its pages are resident
        resident.append(resident_bytes())
        return evaluation

    monkeypatch.setattr(run_module, "evaluate", measured)
    config = {
        **CONFIG,
        "data": {**CONFIG["data"], "options": {"n_train": 4, "n_val": 2, "n_test": 2}},
        "eval": {"num_images": 2},
    }
    path = write_config(
        tmp_path,
        config,
        steps=EVALUATIONS,
        eval_every=1,
        checkpoint_every=1000,
        images_every=10,
        log_every=10,
    )
    assert command(["train", str(path), "--out", str(tmp_path / "run")]) == 0
    during_training = resident[:EVALUATIONS]  # then the final evaluations on val and test
    return during_training[-1] - during_training[WARM_UP - 1]


def test_memory_does_not_grow_across_evaluations(tmp_path, monkeypatch):
    growth = growth_over_evaluations(tmp_path, monkeypatch, leak_bytes=0)
    assert growth < GROWTH_BOUND, f"{growth / 1024**2:.2f} MiB"


def test_the_memory_bound_catches_a_planted_leak(tmp_path, monkeypatch):
    """The bound is not too loose to fail: a small leak per evaluation breaks it."""
    growth = growth_over_evaluations(tmp_path, monkeypatch, leak_bytes=PLANTED_LEAK)
    assert growth > GROWTH_BOUND, f"{growth / 1024**2:.2f} MiB"
