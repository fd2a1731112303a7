"""``RunLog``: a progress bar in a terminal, plain lines every ``log_every`` steps otherwise;
sample pictures with their keys."""

import json
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densetasks.engine.logs import (
    SAMPLE_KEY_WIDTH,
    RunLog,
    cut_events,
    format_train_line,
    write_prediction_images,
)
from densetasks.pictures import joint_key
from densetasks.tasks.depth import Depth
from densetasks.tasks.semseg import SemanticSegmentation

LOSSES = {"semseg": 0.5, "depth": 0.25}


def log_two_steps(run_dir: Path) -> None:
    """What the engine does for two steps with ``log_every=2``: advance, advance, train."""
    log = RunLog(run_dir, total_steps=4, start_step=0, enabled=True)
    log.advance(0.9, 10.0)
    log.advance(0.75, 12.0)
    log.train(2, LOSSES, 0.75, {"semseg": 1.0, "depth": 1.0}, {"all": 1e-3}, 11.0)
    log.message("step 2 val: semseg.miou=0.5")
    log.close()


def test_without_a_terminal_plain_lines_and_no_carriage_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    log_two_steps(tmp_path)
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "step 2/4 semseg=0.5000 depth=0.2500 total=0.7500 img/s=11.0 lr=0.001",
        "step 2 val: semseg.miou=0.5",
    ]
    assert "\r" not in captured.out + captured.err
    event = json.loads((tmp_path / "events.jsonl").read_text())
    assert event["step"] == 2 and event["losses"] == LOSSES


def test_in_a_terminal_the_progress_bar_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    log_two_steps(tmp_path)
    captured = capsys.readouterr()
    assert "step 2/4" not in captured.out  # no plain line: the bar shows progress
    assert "\r" in captured.err and "2/4" in captured.err and "loss=0.7500" in captured.err
    assert "step 2 val: semseg.miou=0.5" in captured.out


def test_a_disabled_log_prints_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    log = RunLog(tmp_path, total_steps=4, start_step=0, enabled=False)
    log.train(2, LOSSES, 0.75, {}, {"all": 1e-3}, 11.0)
    log.message("hidden")
    assert capsys.readouterr().out == "" and not (tmp_path / "events.jsonl").exists()


def test_groups_with_different_learning_rates_are_named() -> None:
    line = format_train_line(5, 10, {"depth": 1.0}, 1.0, 3.0, {"encoder": 1e-4, "heads": 1e-3})
    assert line == "step 5/10 depth=1.0000 total=1.0000 img/s=3.0 lr.encoder=0.0001 lr.heads=0.001"


def test_label_and_prediction_share_one_key_drawn_once_for_the_pair(tmp_path: Path) -> None:
    """Issue 24: the depth bars of label and prediction had different ranges (1.09-6.46 m vs
    2.15-44.57 m). Now both are painted with their joint key, so one depth has one colour in
    both, and the key is one picture per pair, SAMPLE_KEY_WIDTH wide."""
    tasks = {
        "semseg": SemanticSegmentation(num_classes=3, class_names=["floor", "wall", "person"]),
        "depth": Depth(),
    }
    ids = torch.zeros(2, 24, 240, dtype=torch.int64)
    ids[:, :, 100:] = 2  # the prediction has floor and person, the label floor and wall
    depth = torch.linspace(2.0, 8.0, 240).expand(2, 1, 24, 240)  # 2 - 8 m, left to right
    label_depth = torch.linspace(1.0, 2.0, 240).expand(2, 1, 24, 240)  # 1 - 2 m
    batch = {"image": torch.rand(2, 3, 24, 240), "semseg": (ids > 0).long(), "depth": label_depth}
    write_prediction_images(tmp_path, tasks, batch, {"semseg": ids, "depth": depth}, count=1)
    names = {f"0_{task}_{kind}.png" for task in tasks for kind in ("label", "pred", "key")}
    assert {path.name for path in tmp_path.iterdir()} == {"0_input.png", *names}

    read = {name: np.asarray(Image.open(tmp_path / name)) for name in names}
    bar = joint_key(
        tasks["depth"].picture_key(label_depth[0]), tasks["depth"].picture_key(depth[0])
    )
    assert (bar.low, bar.high) == pytest.approx((1.0, 8.0))
    np.testing.assert_array_equal(
        read["0_depth_label.png"], tasks["depth"].visualize_with(label_depth[0], bar)
    )
    np.testing.assert_array_equal(
        read["0_depth_pred.png"], tasks["depth"].visualize_with(depth[0], bar)
    )
    # 2 m is at the label's far right and the prediction's far left: one colour in both
    label_at, prediction_at = read["0_depth_label.png"][0, -1], read["0_depth_pred.png"][0, 0]
    np.testing.assert_array_equal(label_at, prediction_at)
    np.testing.assert_array_equal(read["0_depth_key.png"], bar.draw(SAMPLE_KEY_WIDTH))
    legend = read["0_semseg_key.png"]
    assert legend.shape[1] == SAMPLE_KEY_WIDTH
    for colour in tasks["semseg"].colours:  # floor, wall and person: present in one or other
        assert (legend == colour).all(axis=2).any()
    np.testing.assert_array_equal(read["0_semseg_pred.png"], tasks["semseg"].visualize(ids[0]))


def write_events(path: Path, steps: list[int]) -> list[bytes]:
    lines = [(json.dumps({"type": "train", "step": step}) + "\n").encode() for step in steps]
    path.write_bytes(b"".join(lines))
    return lines


def test_a_resumed_log_is_cut_in_place_at_the_recorded_size(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = write_events(path, [1, 2, 3, 4])
    inode = path.stat().st_ino
    cut_events(path, last_step=99, size=len(lines[0] + lines[1]))
    assert path.read_bytes() == lines[0] + lines[1] and path.stat().st_ino == inode
    cut_events(path, last_step=99, size=10_000)  # never longer than it is
    assert path.read_bytes() == lines[0] + lines[1]


def test_without_a_recorded_size_the_log_is_cut_after_the_step_or_at_a_torn_line(
    tmp_path: Path,
) -> None:
    """Checkpoints written before sizes were recorded: the step decides, and a line that a
    kill cut short ends what is kept."""
    path = tmp_path / "events.jsonl"
    lines = write_events(path, [1, 2, 3, 4])
    cut_events(path, last_step=3, size=None)
    assert path.read_bytes() == b"".join(lines[:3])
    with path.open("ab") as stream:
        stream.write(b'{"type": "train", "st')
    cut_events(path, last_step=10, size=None)
    assert path.read_bytes() == b"".join(lines[:3])


def test_the_log_records_its_size_for_a_checkpoint(tmp_path: Path) -> None:
    log = RunLog(tmp_path, total_steps=4, start_step=0, enabled=True)
    assert log.events_bytes() == 0
    log.train(1, LOSSES, 0.75, {}, {"all": 1e-3}, 11.0)
    log.close()
    assert log.events_bytes() == (tmp_path / "events.jsonl").stat().st_size > 0


def test_a_resumed_log_writes_a_tensorboard_file_that_sorts_after_the_killed_runs(
    tmp_path: Path,
) -> None:
    """TensorBoard applies event files in name order, which starts with the second the file
    was made: a run resumed in the second its predecessor started must still sort last, or the
    predecessor's purge drops the resumed points (seen in CI: a kill -9 and resume in 1 s)."""
    folder = tmp_path / "tensorboard"
    folder.mkdir()
    # the same second, and a name that sorts after this process's own (its host and pid follow)
    earlier = folder / f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}~.1.0"
    earlier.write_bytes(b"")
    log = RunLog(tmp_path, total_steps=20, start_step=10, enabled=True)
    log.train(11, {"a": 1.0}, 1.0, {"a": 1.0}, {"all": 0.1}, 1.0)
    log.close()
    assert sorted(path.name for path in folder.iterdir())[0] == earlier.name
