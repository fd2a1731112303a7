"""Checkpoints: safe loading, records (size + SHA-256), the previous checkpoint kept and
used when the last one is damaged, a full disk, a crash between any two renames."""

import hashlib
import json
import os
import pickle
import random
import warnings

import numpy as np
import pytest
import torch

from densetasks.engine.checkpoint import (
    capture_rng_states,
    load_checkpoint,
    restore_rng_states,
    save_checkpoint,
)
from densetasks.errors import DataError, DenseTasksWarning, DiskFullError

WEIGHTS = {"w": torch.arange(1000.0)}


def names(folder):
    return sorted(path.name for path in folder.iterdir())


def save_steps(path, *steps):
    """``last.pt`` checkpoints of ``steps`` in turn, the previous one kept."""
    for step in steps:
        save_checkpoint({"step": step, "model": WEIGHTS}, path, keep_previous=True)


def test_round_trip_with_weights_only_and_a_record(tmp_path):
    payload = {"step": 3, "model": {"w": torch.arange(4.0)}, "config": {"a": [1, 2]}, "none": None}
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint(payload, path)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and loaded["config"] == {"a": [1, 2]} and loaded["none"] is None
    assert torch.equal(loaded["model"]["w"], torch.arange(4.0))
    assert names(tmp_path / "ck") == ["last.pt", "last.pt.json"]
    record = json.loads((tmp_path / "ck" / "last.pt.json").read_text())
    assert record == {
        "size": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def test_failed_write_keeps_the_previous_file_and_no_temp(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        save_checkpoint({"step": 2, "bad": lambda: 0}, path)
    assert load_checkpoint(path)["step"] == 1
    assert names(tmp_path) == ["last.pt", "last.pt.json"]


def test_the_previous_checkpoint_is_kept_beside_the_last(tmp_path):
    save_steps(tmp_path / "last.pt", 1, 2, 3)
    assert names(tmp_path) == ["last.prev.pt", "last.prev.pt.json", "last.pt", "last.pt.json"]
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3
    assert load_checkpoint(tmp_path / "last.prev.pt")["step"] == 2


def cut(path, keep):
    """A torn write: only the first ``keep`` bytes of ``path`` reached the disk."""
    os.truncate(path, keep)


def flip_a_bit(path):
    """One bit of the middle byte flipped, the size unchanged."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda path: cut(path, path.stat().st_size // 2), "torn or cut"),
        (flip_a_bit, "SHA-256 differs"),
        (lambda path: path.unlink(), "does not exist"),
    ],
    ids=["torn", "bit flip", "missing"],
)
def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, reason):
    path = tmp_path / "last.pt"
    save_steps(path, 1, 2)
    damage(path)
    with pytest.warns(DenseTasksWarning) as warned:
        assert load_checkpoint(path)["step"] == 1
    message = str(warned[0].message)
    assert f"checkpoint {path}" in message and reason in message
    assert f"using the previous checkpoint {tmp_path / 'last.prev.pt'} (step 1)" in message
    assert "\n" not in message


def test_a_damaged_checkpoint_without_a_previous_one_is_an_error_naming_it(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint({"step": 4, "model": WEIGHTS}, path)
    cut(path, 100)
    with pytest.raises(DataError, match=r"best.pt is damaged: it is 100 bytes, \d+ were written"):
        load_checkpoint(path)


def test_when_both_are_damaged_the_error_names_both(tmp_path):
    path = tmp_path / "last.pt"
    save_steps(path, 1, 2)
    flip_a_bit(path)
    cut(tmp_path / "last.prev.pt", 10)
    with pytest.raises(DataError, match=r"last.pt is damaged.*the previous one.*last.prev.pt"):
        load_checkpoint(path)


def test_a_damaged_last_checkpoint_is_not_kept_as_the_previous_one(tmp_path):
    path = tmp_path / "last.pt"
    save_steps(path, 1, 2)
    cut(path, 50)
    save_steps(path, 3)
    assert load_checkpoint(path)["step"] == 3
    assert load_checkpoint(tmp_path / "last.prev.pt")["step"] == 1


def test_a_checkpoint_without_a_record_loads_as_before_and_a_cut_one_is_caught(tmp_path):
    """Run folders written before records existed hold ``last.pt`` alone."""
    path = tmp_path / "last.pt"
    torch.save({"step": 5, "model": WEIGHTS, "format": 1}, path)
    assert load_checkpoint(path)["step"] == 5
    cut(path, path.stat().st_size - 200)
    with pytest.raises(DataError, match="last.pt cannot be read safely"):
        load_checkpoint(path)


class Crash(Exception):
    """Stands in for the process dying between two file operations."""


def test_a_crash_between_any_two_renames_leaves_a_loadable_checkpoint(tmp_path, monkeypatch):
    """Every ``os.replace`` of a save (checkpoint, records, previous) in turn is where the
    process dies; the folder then loads step 2 or step 3 and the next save is whole."""
    real_replace = os.replace
    calls = []

    def counting(*args):
        calls.append(args)
        return real_replace(*args)

    save_steps(tmp_path / "whole" / "last.pt", 1, 2)
    monkeypatch.setattr(os, "replace", counting)
    save_steps(tmp_path / "whole" / "last.pt", 3)
    renames = len(calls)
    assert renames == 4  # previous, its record, checkpoint, its record

    for crash_at in range(renames):
        folder = tmp_path / f"crash_{crash_at}"
        path = folder / "last.pt"
        save_steps(path, 1, 2)
        done = []

        def dying(*args, crash_at=crash_at, done=done):
            if len(done) == crash_at:
                raise Crash
            done.append(args)
            return real_replace(*args)

        monkeypatch.setattr(os, "replace", dying)
        with pytest.raises(Crash):
            save_steps(path, 3)
        monkeypatch.setattr(os, "replace", real_replace)
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            assert load_checkpoint(path)["step"] in (2, 3), crash_at
        assert len(warned) == (0 if path.is_file() else 1), crash_at
        assert not [name for name in names(folder) if name.endswith(".tmp")], crash_at
        save_steps(path, 4)
        assert load_checkpoint(path)["step"] == 4, crash_at


def test_a_full_disk_names_the_file_and_the_space_and_keeps_the_checkpoint(
    tmp_path, file_size_limit
):
    path = tmp_path / "last.pt"
    save_steps(path, 1)
    before = path.read_bytes()
    big = {"step": 2, "model": {"w": torch.zeros(100_000)}}  # 400 kB of weights
    with (
        file_size_limit(len(before) + 4096),
        pytest.raises(DiskFullError) as raised,
    ):
        save_checkpoint(big, path, keep_previous=True)
    message = str(raised.value)
    assert message.startswith(f"cannot write {path}: File too large; it needs about 391.1 KiB")
    assert "file size limit (ulimit -f)" in message
    assert path.read_bytes() == before and load_checkpoint(path)["step"] == 1
    assert names(tmp_path) == ["last.pt", "last.pt.json"]


class Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_checkpoint_cannot_run_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": Exploit()}, path)
    with pytest.raises(DataError, match="evil.pt"):
        load_checkpoint(path)


def test_missing_checkpoint_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_rng_states_survive_a_safe_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.normal()  # leaves a cached gauss in some NumPy versions
    save_checkpoint({"rng": capture_rng_states()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), np.random.normal(), torch.rand(2))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_states(load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = (random.random(), np.random.rand(), np.random.normal(), torch.rand(2))
    assert expected[:3] == again[:3]
    assert torch.equal(expected[3], again[3])
