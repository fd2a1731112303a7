"""Tiny trained runs and a live server for the tests of ``densetasks serve``.

Two runs are trained once per session on 32-px synthetic scenes: hard parameter sharing
(semseg + depth) and a real CompositeTasking network (tiny encoder, narrow decoder) over
four tasks, the one a Task Palette conditions. The test modules skip themselves when the
``serve`` extra is not installed; this file imports it only inside its fixtures.
"""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from densetasks.engine.config import validate_config
from densetasks.engine.run import train

SERVE_EXTRA = "densetasks serve needs the 'serve' extra: pip install -e '.[serve]'"

DATA = {"options": {"n_train": 4, "n_val": 2, "n_test": 3, "size": [32, 32]}, "batch_size": 2}
TRAIN = {
    "steps": 2,
    "optimizer": "adam",
    "lr": 1e-3,
    "eval_every": 2,
    "checkpoint_every": 2,
    "images_every": 0,
}
COMPOSITE_TASKS = ("semseg", "depth", "normals", "edges")


def train_tiny(out: Path, tasks: dict, model: dict) -> Path:
    """A 2-step run of ``model`` with the tiny encoder."""
    config = {"tasks": tasks, "data": DATA, "model": {"encoder": "tiny", **model}, "train": TRAIN}
    return train(validate_config(config), out)


@pytest.fixture(scope="session")
def run_dirs(tmp_path_factory) -> dict[str, Path]:
    """``{"hard": run, "ctn": run}``: the two tiny runs, trained once."""
    root = tmp_path_factory.mktemp("serve_runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        hard = train_tiny(
            root / "hard", {"semseg": {}, "depth": {}}, {"architecture": "hard_sharing"}
        )
        ctn = train_tiny(
            root / "ctn",
            {name: {} for name in COMPOSITE_TASKS},
            {
                "architecture": "composite_tasking",
                "output_stride": 32,
                "options": {"decoder_widths": [16, 16, 16, 16, 8]},
            },
        )
    finally:
        torch.set_num_threads(threads)
    return {"hard": hard, "ctn": ctn}


@pytest.fixture(scope="session")
def runs(run_dirs) -> dict:
    """The two runs loaded for serving (``ServedRun`` by id: ``hard``, ``ctn``)."""
    from densetasks.serve import load_runs

    return load_runs([run_dirs["hard"], run_dirs["ctn"]])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(app, timeout_s: float = 10.0) -> Iterator[str]:
    """``app`` served by uvicorn on 127.0.0.1 at a free port, in a thread; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
