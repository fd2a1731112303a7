"""Tiny trained runs and a live server for the tests of ``densetasks serve``.

Two runs are trained once per session on 32-px synthetic scenes: hard parameter sharing
(semseg + depth) and a real CompositeTasking network (tiny encoder, narrow decoder) over
four tasks, the one a Task Palette conditions. The test modules skip themselves when the
``serve`` extra is not installed; this file imports it only inside its fixtures.
"""

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


def train_tiny(out: Path, tasks: dict, model: dict, data: dict | None = None) -> Path:
    """A 2-step run of ``model`` with the tiny encoder, on ``data`` (default: 32-px scenes
    made on the fly)."""
    config = {
        "tasks": tasks,
        "data": data or DATA,
        "model": {"encoder": "tiny", **model},
        "train": TRAIN,
    }
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


@dataclass
class ServerProcess:
    """A ``densetasks serve`` process: its URL, ``Popen`` and the file its stderr goes to."""

    url: str
    process: subprocess.Popen
    log: Path

    def rss_mb(self) -> float:
        """The server's resident memory in MB (Linux ``/proc``)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc/<pid>/status")

    def threads(self) -> int:
        """The server's thread count (Linux ``/proc``)."""
        return len(os.listdir(f"/proc/{self.process.pid}/task"))


@contextmanager
def server_process(
    run_dirs: list[Path], log: Path, *options: str, timeout_s: float = 60.0
) -> Iterator[ServerProcess]:
    """``densetasks serve RUN_DIR... OPTIONS`` as a real process on a free port, with one
    torch thread (the machine is shared); yields once ``/api/runs`` answers, and stops the
    process afterwards (SIGTERM, then SIGKILL)."""
    import httpx

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "densetasks.cli.main", "serve", *map(str, run_dirs)]
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [*command, "--port", str(port), *options],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"densetasks serve exited: {log.read_text()}")
            try:
                httpx.get(f"{server.url}/api/runs", timeout=5)
                break
            except httpx.TransportError as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"densetasks serve did not start: {log.read_text()}"
                    ) from error
                time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
