"""Cross-stitch, NDDR-CNN, MTAN and MTI-Net runs on the web page: listed with their
architecture and tasks, and every task predicted for an uploaded image."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import SERVE_EXTRA, train_tiny

pytest.importorskip("uvicorn", reason=SERVE_EXTRA)
pytest.importorskip("httpx", reason=SERVE_EXTRA)  # the test client's
TestClient = pytest.importorskip("fastapi.testclient", reason=SERVE_EXTRA).TestClient
serve = pytest.importorskip("densetasks.serve", reason=SERVE_EXTRA)

SMALL = {"bottleneck_options": {"channels": 8}, "head_options": {"channels": 8}}
MODELS = {
    "cross_stitch": {"architecture": "cross_stitch", "options": SMALL},
    "nddr_cnn": {"architecture": "nddr_cnn", "options": SMALL},
    "mtan": {"architecture": "mtan", "options": SMALL},
    "mti_net": {"architecture": "mti_net", "output_stride": 32},
}
TASKS = {"semseg": {}, "depth": {}, "normals": {}}


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> TestClient:
    root = tmp_path_factory.mktemp("survey_runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = [train_tiny(root / name, TASKS, model) for name, model in MODELS.items()]
    finally:
        torch.set_num_threads(threads)
    return TestClient(serve.create_app(serve.load_runs(runs)), raise_server_exceptions=False)


def test_the_runs_are_listed_with_their_architecture_and_tasks(client) -> None:
    listed = {run["id"]: run for run in client.get("/api/runs").json()["runs"]}
    assert {run_id: run["architecture"] for run_id, run in listed.items()} == {
        name: name for name in MODELS
    }
    for run in listed.values():
        assert [task["name"] for task in run["tasks"]] == list(TASKS)
        assert run["palette"] is False


@pytest.mark.parametrize("name", list(MODELS))
def test_every_task_is_predicted_for_an_upload(client, name: str) -> None:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    response = client.post(
        "/api/predict",
        data={"run": name},
        files={"image": ("photo.png", buffer.getvalue(), "image/png")},
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["height"], answer["width"]) == (24, 20)
    assert sorted(answer["tasks"]) == sorted(TASKS)
