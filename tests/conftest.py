"""Fixtures shared across the test packages."""

import contextlib
import copy
import resource
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from densetasks._registry import Registry
from densetasks.cli.main import main
from densetasks.data.io import write_image
from densetasks.engine.checkpoint import load_checkpoint
from densetasks.engine.config import validate_config
from densetasks.engine.inference import Predictor
from densetasks.engine.run import evaluate_run, train


class Interrupt(Exception):
    """Stands in for the process being killed."""


@contextlib.contextmanager
def killed_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> Iterator[None]:
    """Training inside the block dies as step ``step`` starts (after whatever its checkpoints
    hold), as a kill would; afterwards the real step is back for the resume."""
    import densetasks.engine.run as run_module

    real_step = run_module.train_step

    def dying(parts: Any, batch: Any, at: int) -> Any:
        if at == step:
            raise Interrupt
        return real_step(parts, batch, at)

    monkeypatch.setattr(run_module, "train_step", dying)
    with pytest.raises(Interrupt):
        yield
    monkeypatch.setattr(run_module, "train_step", real_step)


@pytest.fixture
def kill_at_step(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], Any]:
    """``with kill_at_step(n): train(...)``: :func:`killed_at_step` with this test's
    monkeypatch."""
    return lambda step: killed_at_step(monkeypatch, step)


@contextlib.contextmanager
def limited_file_size(size: int) -> Iterator[None]:
    """Inside the block, this process cannot write a file past ``size`` bytes: the kernel
    fails the write with ``EFBIG`` (``RLIMIT_FSIZE``, with ``SIGXFSZ`` ignored so that the
    write fails instead of killing the process), as a full disk fails it with ``ENOSPC``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@pytest.fixture
def file_size_limit() -> Callable[[int], Any]:
    """``with file_size_limit(n): ...``: :func:`limited_file_size`."""
    return limited_file_size


@pytest.fixture
def register() -> Iterator[Callable[[Registry, str, Callable[..., Any]], None]]:
    """``register(registry, name, factory)`` for the duration of a test (a task, a dataset,
    an architecture defined in the test file)."""
    added: list[tuple[Registry, str]] = []

    def add(registry: Registry, name: str, factory: Callable[..., Any]) -> None:
        registry.register(name, factory)
        added.append((registry, name))

    yield add
    for registry, name in reversed(added):
        registry.unregister(name)


def end_to_end(config: dict[str, Any], tmp_path: Path, monkeypatch) -> dict[str, Any]:
    """Train ``config`` 3 steps, kill a second run at step 2 and resume it, evaluate on test,
    predict an image with the Predictor and with ``densetasks predict``.

    Asserts that the resumed run equals the uninterrupted one bit for bit and that every
    task is evaluated and predicted at the image's size; returns what the caller checks
    further: ``{"run": Path, "test": metrics payload, "prediction": Prediction}``.
    """
    config = validate_config(
        {
            **config,
            "train": {
                "steps": 3,
                "optimizer": "adam",
                "lr": 1e-3,
                "eval_every": 3,
                "log_every": 1,
                "checkpoint_every": 2,
                "images_every": 3,
                **config.get("train", {}),
            },
        }
    )
    whole = train(config, tmp_path / "whole")

    with killed_at_step(monkeypatch, 2):
        train(config, tmp_path / "killed")
    train(config, tmp_path / "killed", resume=True)
    expected = load_checkpoint(whole / "checkpoints" / "last.pt")["model"]
    resumed = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["model"]
    for name, value in expected.items():
        assert torch.equal(value, resumed[name]), name

    test = evaluate_run(whole, split="test")
    assert set(test["metrics"]) == set(config.tasks)

    image = torch.rand(3, 40, 36, generator=torch.Generator().manual_seed(0))
    prediction = Predictor.from_run_dir(whole)(image)
    for name in config.tasks:
        assert tuple(prediction.outputs[name].shape[-2:]) == (40, 36), name
    write_image(tmp_path / "photo.png", image)
    assert (
        main(
            [
                "--debug",
                "predict",
                str(whole),
                str(tmp_path / "photo.png"),
                "--out",
                str(tmp_path / "predicted"),
            ]
        )
        == 0
    )
    for name in config.tasks:
        assert (tmp_path / "predicted" / f"photo_{name}.png").is_file(), name
    return {"run": whole, "test": test, "prediction": prediction}


@pytest.fixture
def run_end_to_end(tmp_path: Path, monkeypatch) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """:func:`end_to_end` bound to this test's folder."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield lambda config: end_to_end(config, tmp_path, monkeypatch)
    torch.set_num_threads(threads)


SWEEP_CONFIG = {
    "seed": 1,
    "tasks": {"semseg": {}, "depth": {}},
    "data": {
        "options": {"n_train": 8, "n_val": 4, "n_test": 4, "size": [32, 32]},
        "batch_size": 4,
        "crop_size": [32, 32],
        "workers": 0,
    },
    "model": {"architecture": "hard_sharing", "encoder": "tiny", "bottleneck": "none"},
    "balancer": {"name": "fixed"},
    "train": {
        "steps": 4,
        "optimizer": "adam",
        "lr": 1e-3,
        "eval_every": 2,
        "log_every": 1,
        "checkpoint_every": 2,
        "images_every": 0,
    },
}
"""The base config of the sweep tests: 4 steps of the tiny encoder at 32 px, checkpoints at
steps 2 and 4."""


@pytest.fixture
def sweep_config() -> dict[str, Any]:
    """A fresh copy of :data:`SWEEP_CONFIG`."""
    return copy.deepcopy(SWEEP_CONFIG)


@pytest.fixture
def sweep_config_file(sweep_config: dict[str, Any], tmp_path: Path) -> Path:
    """:data:`SWEEP_CONFIG` as a YAML file in this test's folder."""
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep_config))
    return path


@pytest.fixture
def sweep_cli() -> Callable[[list[str]], int]:
    """``densetasks --debug sweep ARGV`` in this process: errors raise instead of printing."""
    return lambda argv: main(["--debug", "sweep", *argv])
