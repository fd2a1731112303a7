import pickle
import random

import numpy as np
import pytest
import torch

from densetasks.engine.checkpoint import (
    capture_rng_states,
    load_checkpoint,
    restore_rng_states,
    save_checkpoint,
)
from densetasks.errors import DataError


def test_round_trip_with_weights_only(tmp_path):
    payload = {"step": 3, "model": {"w": torch.arange(4.0)}, "config": {"a": [1, 2]}, "none": None}
    save_checkpoint(payload, tmp_path / "ck" / "last.pt")
    loaded = load_checkpoint(tmp_path / "ck" / "last.pt")
    assert loaded["step"] == 3 and loaded["config"] == {"a": [1, 2]} and loaded["none"] is None
    assert torch.equal(loaded["model"]["w"], torch.arange(4.0))
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["last.pt"]


def test_failed_write_keeps_the_previous_file_and_no_temp(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        save_checkpoint({"step": 2, "bad": lambda: 0}, path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


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
