"""The JSON API of ``densetasks serve`` through FastAPI's test client: every route, every error.

Errors are JSON ``{"error", "status"}`` with the HTTP status: 400 a wrong field, 404 an
unknown run, sample, route or report, 405 a wrong method, 413 too large (bytes or pixels),
415 not an accepted type (judged by content), 422 a path parameter of the wrong type, 503
the queue full, 500 anything unexpected.
"""

import base64
import dataclasses
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densetasks.cli.main import main
from densetasks.cli.predict import predict_image
from densetasks.data.palettes import NO_TASK

from .conftest import COMPOSITE_TASKS, SERVE_EXTRA

uvicorn = pytest.importorskip("uvicorn", reason=SERVE_EXTRA)
pytest.importorskip("httpx", reason=SERVE_EXTRA)  # the test client's
TestClient = pytest.importorskip("fastapi.testclient", reason=SERVE_EXTRA).TestClient
serve = pytest.importorskip("densetasks.serve", reason=SERVE_EXTRA)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def photo(height: int = 24, width: int = 20) -> bytes:
    generator = np.random.default_rng(0)
    return png(generator.integers(0, 256, (height, width, 3), dtype=np.uint8))


def decoded(values: dict) -> np.ndarray:
    dtype = np.uint8 if values["dtype"] == "uint8" else np.float32
    return np.frombuffer(base64.b64decode(values["data"]), dtype=dtype).reshape(values["shape"])


def picture(entry: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(entry["png"]))))


@pytest.fixture
def client(runs) -> TestClient:
    return TestClient(serve.create_app(runs), raise_server_exceptions=False)


def post(client: TestClient, fields: dict, files: dict | None = None):
    return client.post("/api/predict", data=fields, files=files)


def error(response, status: int, match: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status
    assert match in body["error"], body["error"]


def test_the_page_and_its_static_files(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for name in ("/static/app.js", "/static/png.js", "/static/palette.js", "/static/values.js"):
        script = client.get(name)
        assert script.status_code == 200, name
        assert script.headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    error(client.get("/static/secret.txt"), 404, "no static file 'secret.txt'")
    error(client.get("/static/..%2F__init__.py"), 404, "Not Found")
    error(client.get("/no/such/page"), 404, "Not Found")


def test_runs_lists_tasks_classes_palette_and_limits(client, runs) -> None:
    hard = runs["hard"]
    body = client.get("/api/runs").json()
    runs = {run["id"]: run for run in body["runs"]}
    assert list(runs) == ["hard", "ctn"]
    assert [task["name"] for task in runs["ctn"]["tasks"]] == list(COMPOSITE_TASKS)
    assert (runs["ctn"]["palette"], runs["hard"]["palette"]) == (True, False)
    assert runs["ctn"]["rules"] == ["S", "R1r", "Rrnd"] and runs["hard"]["rules"] == []
    semseg = runs["hard"]["tasks"][0]
    assert semseg["meaning"] == "class ids" and semseg["classes"][0]["name"] == "floor"
    colours = hard.predictor.tasks["semseg"].colours.tolist()
    assert [entry["colour"] for entry in semseg["classes"]] == colours
    units = [(task["unit"], task["digits"], task["channels"]) for task in runs["ctn"]["tasks"][1:]]
    assert units == [("m", 2, ["depth"]), ("", 2, ["x", "y", "z"]), ("", 2, [])]
    assert all("classes" not in task for task in runs["ctn"]["tasks"][1:])
    assert runs["hard"]["samples"] == 3 and runs["hard"]["report"] is None
    assert body["limits"] == {"max_upload_bytes": 10 * 1024 * 1024, "max_pixels": 4_000_000}


def test_samples_are_test_images(client) -> None:
    response = client.get("/api/runs/hard/samples/2")
    assert response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (32, 32)
    error(client.get("/api/runs/hard/samples/3"), 404, "it offers 0..2")
    error(client.get("/api/runs/hard/samples/-1"), 404, "no test image -1")
    error(client.get("/api/runs/nope/samples/0"), 404, "no run 'nope'; runs: hard, ctn")
    error(client.get("/api/runs/hard/samples/first"), 422, "index")


def test_report_is_linked_when_the_run_has_one(runs, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    report.write_text("<h1>report</h1>")
    with_report = {**runs, "hard": dataclasses.replace(runs["hard"], report=report)}
    client = TestClient(serve.create_app(with_report))
    listed = client.get("/api/runs").json()["runs"][0]
    assert listed["report"] == "/runs/hard/report.html"
    assert client.get(listed["report"]).text == "<h1>report</h1>"
    error(client.get("/runs/ctn/report.html"), 404, "run 'ctn' has no report.html")
    error(client.get("/runs/nope/report.html"), 404, "no run 'nope'")


def test_predict_every_task_with_raw_values_and_timing(client, runs) -> None:
    body = post(client, {"run": "hard", "raw": "1"}, {"image": ("x.jpg", photo(), "text/plain")})
    assert body.status_code == 200, body.text
    answer = body.json()
    assert (answer["height"], answer["width"]) == (24, 20)
    assert answer["composite"] is None and answer["palette"] is None
    assert answer["timing"]["forward_ms"] > 0
    assert answer["timing"]["total_ms"] >= answer["timing"]["forward_ms"]
    semseg, depth = answer["tasks"]["semseg"], answer["tasks"]["depth"]
    ids = decoded(semseg["values"])
    assert ids.shape == (24, 20) and semseg["legend"]["ids"] == sorted(np.unique(ids).tolist())
    colours = runs["hard"].predictor.tasks["semseg"].colours
    np.testing.assert_array_equal(picture(semseg), colours[ids])
    metres = decoded(depth["values"])
    assert metres.shape == (1, 24, 20) and (metres > 0).all()
    stops = [stop["value"] for stop in depth["legend"]["stops"]]
    assert depth["legend"]["unit"] == "m"
    assert stops[0] == pytest.approx(metres.min(), rel=1e-3)
    assert stops[-1] == pytest.approx(metres.max(), rel=1e-3)
    plain = post(client, {"run": "hard"}, {"image": ("x", photo(), "image/png")}).json()
    assert "values" not in plain["tasks"]["semseg"]


def test_predict_a_test_image_by_index(client) -> None:
    answer = post(client, {"run": "ctn", "sample": "1", "raw": "true"}).json()
    assert (answer["height"], answer["width"]) == (32, 32)
    normals = decoded(answer["tasks"]["normals"]["values"])
    np.testing.assert_allclose(np.linalg.norm(normals, axis=0), 1.0, atol=1e-4)
    assert answer["tasks"]["edges"]["legend"] == {"kind": "text", "text": "black 0 → white 1"}
    error(post(client, {"run": "ctn", "sample": "7"}), 404, "sample: run 'ctn' has no test image")


def test_a_painted_palette_gives_the_composite_per_region(client, runs, tmp_path: Path) -> None:
    palette = np.full((24, 20), NO_TASK, dtype=np.uint8)
    palette[:10, :8] = 0
    palette[14:, 10:] = 1
    image = photo()
    answer = post(
        client, {"run": "ctn"}, {"image": ("i", image, "image/png"), "palette": ("p", png(palette))}
    ).json()
    composite = picture(answer["composite"])
    assert not composite[palette == NO_TASK].any()
    depth_picture = picture(answer["tasks"]["depth"])
    np.testing.assert_array_equal(composite[palette == 1], depth_picture[palette == 1])
    ids = np.frombuffer(base64.b64decode(answer["palette"]["ids"]), dtype=np.uint8)
    np.testing.assert_array_equal(ids.reshape(24, 20), palette)
    # the palette the page downloads works with ``densetasks predict --palette``
    (tmp_path / "palette.png").write_bytes(base64.b64decode(answer["palette"]["png"]))
    (tmp_path / "photo.png").write_bytes(image)
    predict_image(
        runs["ctn"].predictor,
        tmp_path / "photo.png",
        tmp_path / "out",
        palette=tmp_path / "palette.png",
    )
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "out/photo_composite.png")), composite
    )


@pytest.mark.parametrize(
    ("fields", "tasks"),
    [
        ({"rule": "S", "task": "normals"}, {2}),
        ({"rule": "R1r", "seed": "3"}, {0, 1, 2, 3}),
        ({"rule": "Rrnd", "seed": "1"}, {0, 1, 2, 3}),
    ],
)
def test_a_rule_draws_the_palette(client, runs, fields, tasks) -> None:
    answer = post(client, {"run": "ctn", **fields}, {"image": ("i", photo(), "image/png")}).json()
    ids = np.frombuffer(base64.b64decode(answer["palette"]["ids"]), dtype=np.uint8)
    assert set(np.unique(ids).tolist()) <= tasks
    seed = int(fields.get("seed", 0))
    options = {"task": fields["task"]} if "task" in fields else {}
    rules = runs["ctn"].predictor.rule_palette  # draws from the image's size only
    expected = rules(torch.zeros(3, 24, 20), fields["rule"], seed, **options)
    np.testing.assert_array_equal(ids.reshape(24, 20), expected.numpy())


IMAGE = {"image": ("i", photo(), "image/png")}


@pytest.mark.parametrize(
    ("fields", "files", "match"),
    [
        ({}, IMAGE, "run: missing"),
        ({"run": "hard", "colour": "red"}, IMAGE, "unknown field(s) ['colour']"),
        ({"run": ["hard", "ctn"]}, IMAGE, "field 'run' given twice"),
        ({"run": "hard", "image": "x.png"}, None, "image and palette are files"),
        ({"run": "hard"}, None, "exactly one of image"),
        ({"run": "hard", "sample": "0"}, IMAGE, "exactly one of image"),
        ({"run": "hard", "sample": "one"}, None, "sample: 'one' is not an integer"),
        ({"run": "ctn", "rule": "R2"}, IMAGE, "rule: 'R2' is not one of S, R1r, Rrnd"),
        ({"run": "ctn", "rule": "file"}, IMAGE, "rule: 'file' is not one of"),
        ({"run": "ctn", "rule": "R1r", "task": "depth"}, IMAGE, "only rule S takes a task"),
        ({"run": "ctn", "rule": "S", "task": "parts"}, IMAGE, "task 'parts' is not one of"),
        ({"run": "ctn", "rule": "R1r", "seed": "-1"}, IMAGE, "seed: -1 is not in [0, "),
        ({"run": "hard", "raw": "maybe"}, IMAGE, "raw: 'maybe' is not a yes/no value"),
        ({"run": "hard", "rule": "S"}, IMAGE, "run 'hard' takes no Task Palette"),
        (
            {"run": "ctn", "rule": "S"},
            {**IMAGE, "palette": ("p", png(np.zeros((24, 20), np.uint8)))},
            "at most one of palette",
        ),
        ({"run": "hard"}, {"image": ("i", b"", "image/png")}, "image: the file is empty"),
        ({"run": "hard"}, {"image": ("i", photo()[:60], "image/png")}, "image: cannot read"),
    ],
)
def test_wrong_fields_are_400(client, fields, files, match) -> None:
    error(post(client, fields, files), 400, match)


@pytest.mark.parametrize(
    ("palette", "match"),
    [
        (np.zeros((8, 20), np.uint8), "palette: the palette is 8x20 (HxW) but the image is 24x20"),
        (np.full((24, 20), 7, np.uint8), "palette: unknown task id(s) [7]"),
        (np.zeros((24, 20, 3), np.uint8), "palette: expected a single-channel PNG, got mode RGB"),
    ],
)
def test_wrong_palettes_are_400(client, palette, match) -> None:
    files = {**IMAGE, "palette": ("p.png", png(palette), "image/png")}
    error(post(client, {"run": "ctn"}, files), 400, match)


def test_unknown_runs_are_404(client) -> None:
    error(post(client, {"run": "../hard"}, IMAGE), 404, "no run '../hard'")


def test_types_are_judged_by_content_415(client) -> None:
    error(
        post(client, {"run": "hard"}, {"image": ("photo.png", b"<svg></svg>", "image/png")}),
        415,
        "image: not a PNG, JPEG, WebP, GIF or BMP file (judged by content)",
    )
    jpeg = io.BytesIO()
    Image.new("L", (20, 24)).save(jpeg, format="JPEG")
    files = {**IMAGE, "palette": ("palette.png", jpeg.getvalue(), "image/png")}
    error(post(client, {"run": "ctn"}, files), 415, "palette: not a PNG file")
    error(client.post("/api/predict", json={"run": "hard"}), 415, "multipart/form-data")


def test_too_large_is_413(runs) -> None:
    client = TestClient(serve.create_app(runs, serve.Limits(max_upload_bytes=4000, max_pixels=600)))
    big = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    error(post(client, {"run": "hard"}, {"image": ("i", png(big))}), 413, "over the limit of 4,000")
    error(
        post(client, {"run": "hard"}, {"image": ("i", png(np.zeros((30, 30, 3), np.uint8)))}),
        413,
        "image: 30x30 = 900 pixels, over the limit of 600 pixels",
    )
    error(
        client.post(
            "/api/predict",
            content=b"x" * 100,
            headers={"content-type": "multipart/form-data; boundary=b", "content-length": "99999"},
        ),
        413,
        "request of 99,999 bytes",
    )
    chunks = (b"x" * 8192 for _ in range(20))  # no length declared: counted as it arrives
    response = client.post(
        "/api/predict", content=chunks, headers={"content-type": "multipart/form-data; boundary=b"}
    )
    error(response, 413, "request body over 73,536 bytes")


def test_a_malformed_form_is_400(client) -> None:
    response = client.post(
        "/api/predict",
        content=b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n",
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    error(response, 400, 'The Content-Disposition header field "name" must be provided')


def test_a_full_queue_is_503_with_retry_after(runs) -> None:
    app = serve.create_app(runs, concurrency=1, queue=0)
    client = TestClient(app)
    with app.state.gate.admit():
        response = post(client, {"run": "hard"}, IMAGE)
    error(response, 503, "busy: 1 requests running or waiting")
    assert response.headers["retry-after"] == "2"
    assert post(client, {"run": "hard"}, IMAGE).status_code == 200
    assert app.state.gate.admitted == 0


def test_an_unexpected_failure_is_500_json(runs, client, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(runs["hard"], "predictor", broken)
    error(post(client, {"run": "hard"}, IMAGE), 500, "internal error (RuntimeError)")


def test_wrong_method_is_405(client) -> None:
    error(client.get("/api/predict"), 405, "Method Not Allowed")


def test_the_command_checks_its_options(run_dirs, monkeypatch, capsys) -> None:
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: served.append((host, kw)))
    assert main(["serve", str(run_dirs["hard"]), "--port", "8123", "--drain-s", "5"]) == 0
    assert capsys.readouterr().out.strip() == "densetasks serve: 1 run(s) at http://127.0.0.1:8123/"
    assert served == [
        ("127.0.0.1", {"log_level": "warning", "access_log": False, "timeout_graceful_shutdown": 5})
    ]
    for options, message in [
        (["--queue", "-1"], "--queue >= 0"),
        (["--max-pixels", "200000000"], "--max-pixels: at most 178,956,970 (Pillow's own limit)"),
        (["--drain-s", "-1"], "--drain-s must be >= 0"),
    ]:
        assert main(["serve", str(run_dirs["hard"]), *options]) == 2
        assert message in capsys.readouterr().err


def test_repeated_run_names_get_distinct_ids(run_dirs) -> None:
    assert list(serve.load_runs([run_dirs["hard"], run_dirs["hard"]])) == ["hard", "hard-2"]


def test_every_request_gets_one_access_log_line_without_its_query(client, caplog) -> None:
    caplog.set_level("INFO", logger="densetasks.serve.access")
    body = client.get("/api/runs?token=not-for-the-log").content
    client.get("/favicon.ico")
    post(client, {"run": "nope"}, IMAGE)
    client.get("/no%0Afake 200 line")
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 4, lines
    assert re.fullmatch(rf'testclient "GET /api/runs" 200 {len(body)} B \d+\.\d ms', lines[0])
    assert lines[1].startswith('testclient "GET /favicon.ico" 200 ')
    assert lines[2].startswith('testclient "POST /api/predict" 404 ')
    assert lines[3].startswith('testclient "GET /no%0Afake%20200%20line" 404 ')
    assert "token" not in caplog.text


def test_the_favicon_is_the_pages_icon(client) -> None:
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert (
        icon.content.startswith(b"<svg")
        and icon.content == client.get("/static/favicon.svg").content
    )
    assert '<link rel="icon" href="/static/favicon.svg"' in client.get("/").text


def test_a_palette_run_predicts_rule_s_without_the_rule_passes(client, runs) -> None:
    """Rule S is one forward per task; the evaluation's R1r pass (shown nowhere on the page)
    is not run, and the pictures are those of the full evaluation plan."""
    model = runs["ctn"].predictor.run.model
    calls = []
    hook = model.register_forward_hook(lambda module, args, kwargs: calls.append(1))
    try:
        answer = post(client, {"run": "ctn"}, {"image": ("i", photo(), "image/png")}).json()
    finally:
        hook.remove()
    assert len(calls) == len(COMPOSITE_TASKS) == len(model.evaluation_plan()) - 1
    image = serve.uploads.decode_image(photo(), serve.Limits())
    full = runs["ctn"].predictor(image)
    assert list(full.rules) == ["R1r"]
    for name, expected in full.pictures(runs["ctn"].predictor.tasks).items():
        np.testing.assert_array_equal(picture(answer["tasks"][name]), expected)
