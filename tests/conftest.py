"""Fixtures shared across the test packages."""

import contextlib
import copy
import resource
import signal
from collections.abc import Callable, Iterator, Mapping
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
from densetasks.errors import ConfigError
from densetasks.export import check_export, export_run
from densetasks.models import create_model
from densetasks.tasks.registry import TASKS


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
    predict an image with the Predictor and with ``densetasks predict``, export the run to
    ONNX (32 × 32) and check the graph against PyTorch.

    Asserts that the resumed run equals the uninterrupted one bit for bit, that every task
    is evaluated and predicted at the image's size and that the export passes its parity
    check for every task; returns what the caller checks further: ``{"run": Path, "test":
    metrics payload, "prediction": Prediction, "export": Path, "parity": ParityReport}``.
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

    exported = tmp_path / "export" / "model.onnx"
    export_run(whole, exported, size=(32, 32))
    parity = check_export(exported)
    assert parity.ok, parity.table()
    assert {row.output for row in parity.rows} >= set(config.tasks)
    return {
        "run": whole,
        "test": test,
        "prediction": prediction,
        "export": exported,
        "parity": parity,
    }


@pytest.fixture
def run_end_to_end(tmp_path: Path, monkeypatch) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """:func:`end_to_end` bound to this test's folder."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield lambda config: end_to_end(config, tmp_path, monkeypatch)
    torch.set_num_threads(threads)


SYNTHETIC = {"options": {"n_train": 4, "n_val": 2, "n_test": 2, "size": [32, 32]}, "batch_size": 2}
"""Tiny synthetic data for the registry-wide runs: 4 training images of 32 × 32."""

ARCHITECTURE_TASKS = ("semseg", "depth", "normals")
"""The tasks every registered architecture is run with (one of them, ``semseg``, for an
architecture that refuses several: a ``ConfigError`` when it is built)."""


NARROW = {"bottleneck_options": {"channels": 16}, "head_options": {"channels": 16}}
COMPOSITE_NARROW = {"decoder_widths": [16, 8, 8, 8, 8]}
CROSS_TASK_NARROW = {"decoder_widths": [16, 16, 8, 8, 8], "aspp_options": {"channels": 16}}
SPEED_OPTIONS: dict[str, dict[str, Any]] = {
    "single_task": NARROW,
    "hard_sharing": NARROW,
    "composite_tasking": COMPOSITE_NARROW,
    "composite_stn": COMPOSITE_NARROW,
    "composite_mhn": COMPOSITE_NARROW,
    "composite_mn": COMPOSITE_NARROW,
    "fission": {"decoder_channels": 16},
    "padnet": {"channels": 8},
    "three_ways": CROSS_TASK_NARROW,
    "three_ways_mteb": CROSS_TASK_NARROW,
    "three_ways_padnet": CROSS_TASK_NARROW,
    "invpt": {"embed_channels": 16, "prediction_channels": 8},
}
"""Narrower layers for the registry-wide runs, for speed only: every registered architecture
is run whether it is listed here or not (an architecture not listed runs with its defaults,
about 3 times slower, since the size of the weights sets the time of a run's checkpoints,
model builds and exports)."""


ARCHITECTURE_ENCODERS = {"invpt": "test_vit"}
"""The encoder of the registry-wide runs of an architecture that cannot run on ``tiny``
(InvPT decodes a plain ViT's tokens: timm's ~0.2M-parameter ``test_vit``)."""


def architecture_encoder(architecture: str) -> str:
    """The encoder the registry-wide tests build ``architecture`` on: ``tiny`` unless
    :data:`ARCHITECTURE_ENCODERS` names another."""
    return ARCHITECTURE_ENCODERS.get(architecture, "tiny")


def architecture_tasks(architecture: str) -> dict[str, dict[str, Any]]:
    """:data:`ARCHITECTURE_TASKS` as a config's ``tasks``, or its first alone when
    ``architecture`` refuses several tasks."""
    channels = {"semseg": 5, "depth": 1, "normals": 3}
    try:
        create_model(
            architecture,
            channels,
            encoder=architecture_encoder(architecture),
            **SPEED_OPTIONS.get(architecture, {}),
        )
    except ConfigError:
        return {ARCHITECTURE_TASKS[0]: {}}
    return {name: {} for name in ARCHITECTURE_TASKS}


def registered_task_options() -> dict[str, dict[str, Any]]:
    """Every registered task with its :attr:`~densetasks.tasks.base.Task.example_options`:
    a config's ``tasks`` that trains every task on the synthetic scenes."""
    return {name: dict(TASKS.get(name).example_options) for name in TASKS.names()}


class Cache(dict):
    """A dict that makes a missing value with ``make(key)`` (a run trained on first use)."""

    def __init__(self, make: Callable[[Any], Any]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, key: Any) -> Any:
        self[key] = self.make(key)
        return self[key]


def _isolated_end_to_end(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """:func:`end_to_end` in ``folder`` with a monkeypatch of its own and one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            return end_to_end(config, folder, monkeypatch)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def architecture_runs(tmp_path_factory) -> Mapping[str, dict[str, Any]]:
    """Registered architecture -> its :func:`end_to_end` result (trained, killed and
    resumed, evaluated, predicted, exported and checked), with :func:`architecture_tasks`
    on :data:`SYNTHETIC` data and the tiny encoder; made on first use, once per session, so
    the resume, predict and export tests share one run per architecture."""

    def make(architecture: str) -> dict[str, Any]:
        config = {
            "tasks": architecture_tasks(architecture),
            "data": {**SYNTHETIC, "eval_size": [32, 32]},
            "model": {
                "architecture": architecture,
                "encoder": architecture_encoder(architecture),
                "options": SPEED_OPTIONS.get(architecture, {}),
            },
            "eval": {"num_images": 0},
        }
        return _isolated_end_to_end(config, tmp_path_factory.mktemp(architecture))

    return Cache(make)


@pytest.fixture(scope="session")
def every_task_run(tmp_path_factory) -> dict[str, Any]:
    """The :func:`end_to_end` result of one hard-sharing run of every registered task
    (:func:`registered_task_options`) on :data:`SYNTHETIC` data, made once per session."""
    config = {
        "tasks": registered_task_options(),
        "data": {**SYNTHETIC, "eval_size": [32, 32]},
        "model": {"architecture": "hard_sharing", "encoder": "tiny", "options": NARROW},
        "eval": {"num_images": 0},
    }
    return _isolated_end_to_end(config, tmp_path_factory.mktemp("every_task"))


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


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op torch thread for the test: tiny models run fastest (and steadiest on a
    busy machine) on one, and a Ray run, with one CPU, uses one, so losses compare."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
