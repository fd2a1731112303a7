"""``densetasks serve`` under faults, on a real server process.

* A run's files broken or deleted while the server runs fail that run's routes alone (503
  while its test images cannot be read, 404 once its report is gone); it still predicts
  uploads (its model is in memory) and the other run answers as before.
* SIGTERM: the server stops taking connections, answers every request already in flight,
  then exits with the signal's status.
"""

import io
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densetasks.data.folder import write_folder_dataset
from densetasks.data.synthetic import SyntheticScenes
from densetasks.tasks.registry import label_kinds

from .conftest import SERVE_EXTRA, server_process, train_tiny

httpx = pytest.importorskip("httpx", reason=SERVE_EXTRA)
pytest.importorskip("densetasks.serve", reason=SERVE_EXTRA)

IN_FLIGHT = 4
DRAIN_S = 120


def image_bytes(size: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def disk_run(tmp_path: Path) -> Path:
    """A 2-step run on a folder dataset written to disk, with a report.html in its folder."""
    data = tmp_path / "data"
    for split, seed in (("train", 0), ("val", 1), ("test", 2)):
        scenes = SyntheticScenes(n=3, size=(32, 32), seed=seed, tasks=("semseg", "depth"))
        samples = (scenes[i] for i in range(3))
        write_folder_dataset(samples, data, split, label_kinds(), scenes.task_options)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = train_tiny(
            tmp_path / "on_disk",
            {"semseg": {}, "depth": {}},
            {"architecture": "hard_sharing"},
            data={"dataset": "folder", "root": str(data), "batch_size": 2},
        )
    finally:
        torch.set_num_threads(threads)
    (run / "report.html").write_text("<h1>report</h1>")
    return run


def test_a_broken_or_deleted_run_fails_alone(disk_run, run_dirs, tmp_path: Path) -> None:
    upload = {"image": ("photo.png", image_bytes(24), "image/png")}
    with (
        server_process([disk_run, run_dirs["hard"]], tmp_path / "server.log") as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):

        def others_answer() -> None:
            assert client.get("/api/runs").status_code == 200
            assert client.get("/api/runs/hard/samples/0").status_code == 200
            assert client.post("/api/predict", data={"run": "hard"}, files=upload).is_success
            answer = client.post("/api/predict", data={"run": "on_disk"}, files=upload)
            assert answer.status_code == 200, answer.text  # its model is in memory

        assert client.get("/api/runs/on_disk/samples/0").status_code == 200
        assert client.get("/runs/on_disk/report.html").text == "<h1>report</h1>"

        data = Path(disk_run.parent / "data")
        first = data / "images" / f"{(data / 'splits' / 'test.txt').read_text().split()[0]}.png"
        first.write_bytes(first.read_bytes()[:40])  # corrupted: a truncated PNG
        for response in (
            client.get("/api/runs/on_disk/samples/0"),
            client.post("/api/predict", data={"run": "on_disk", "sample": "0"}),
        ):
            assert response.status_code == 503, response.text
            assert response.json()["error"].startswith("run 'on_disk': test image 0 cannot be")
        assert client.get("/api/runs/on_disk/samples/1").status_code == 200
        others_answer()

        shutil.rmtree(disk_run)  # the whole run folder deleted
        response = client.get("/runs/on_disk/report.html")
        assert response.status_code == 404
        assert response.json()["error"] == (
            "run 'on_disk': its report.html was removed after the server started"
        )
        shutil.rmtree(data)  # and its dataset
        assert client.get("/api/runs/on_disk/samples/1").status_code == 503
        others_answer()
        assert server.process.poll() is None
    assert "Traceback" not in server.log.read_text()


def test_sigterm_drains_the_requests_in_flight_and_exits(run_dirs, tmp_path: Path) -> None:
    upload = image_bytes(160)
    options = ("--queue", str(IN_FLIGHT), "--drain-s", str(DRAIN_S))
    first_done = threading.Event()
    with (
        server_process([run_dirs["ctn"]], tmp_path / "server.log", *options) as server,
        httpx.Client(base_url=server.url, timeout=DRAIN_S) as client,
    ):

        def one(_: int) -> tuple[int, float]:
            files = {"image": ("photo.png", upload, "image/png")}
            response = client.post("/api/predict", data={"run": "ctn"}, files=files)
            first_done.set()
            return response.status_code, time.monotonic()

        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            answers = [pool.submit(one, index) for index in range(IN_FLIGHT)]
            assert first_done.wait(DRAIN_S)
            # the others were read while the first ran: they wait in the gate now
            terminated = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(httpx.TransportError):  # no new connections
                httpx.get(f"{server.url}/api/runs", timeout=5)
            results = [answer.result() for answer in answers]
        assert server.process.wait(DRAIN_S) == -signal.SIGTERM
    assert [status for status, _ in results] == [200] * IN_FLIGHT
    drained = [at for _, at in results if at > terminated]
    assert len(drained) >= IN_FLIGHT - 2, "too few requests were in flight at SIGTERM"
    assert server.log.read_text().count('"POST /api/predict" 200') == IN_FLIGHT
