"""The FastAPI app of ``densetasks serve``: the page, its static files and the JSON API.

Routes (``docs/serve.md``): ``GET /`` the page; ``GET /static/{name}`` its script and style,
held in memory; ``GET /favicon.ico``; ``GET /api/runs``; ``GET /api/runs/{id}/samples/{index}``
a test image as PNG; ``POST /api/predict``; ``GET /runs/{id}/report.html`` the run's report.
Every error is JSON ``{"error": message, "status": code}``. Requests name runs by id and
files by known names only, so no request reaches the file system; uploads go to a temporary
folder. Every request is logged (:mod:`~densetasks.serve.access_log`) and, with a ``token``,
refused without it (:mod:`~densetasks.serve.auth`).

A run whose files go missing or break while the server runs fails alone: its report is 404
once removed, its test images 503 while they cannot be read; its model is in memory, so it
still predicts uploads, and every other run answers as before.
"""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from densetasks.serve.access_log import AccessLog
from densetasks.serve.auth import TokenGuard
from densetasks.serve.gate import Busy, Gate
from densetasks.serve.predict import parse_request, png_bytes, predict
from densetasks.serve.registry import RunUnavailable, ServedRun
from densetasks.serve.uploads import Limits, UploadError

logger = logging.getLogger(__name__)

STATIC_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
FAVICON = "favicon.svg"
FORM_OVERHEAD = 64 * 1024
"""Bytes a form may carry besides its two files (boundaries, headers, text fields)."""
MAX_FIELDS = 16
RETRY_AFTER_S = 2


def create_app(
    runs: Mapping[str, ServedRun],
    limits: Limits | None = None,
    concurrency: int = 1,
    queue: int = 8,
    token: str | None = None,
) -> FastAPI:
    """The app serving ``runs`` (from :func:`~densetasks.serve.registry.load_runs`), with
    upload ``limits``, at most ``concurrency`` predictions at once plus ``queue`` waiting,
    and, when ``token`` is given, every route closed to requests without it."""
    limits = limits or Limits()
    gate = Gate(concurrency, queue)
    static = _static_files()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        gate.close()

    app = FastAPI(
        title="densetasks serve",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.gate = gate
    _add_error_handlers(app)
    if token is not None:
        app.add_middleware(TokenGuard, token=token)
    app.add_middleware(AccessLog)  # outermost: logs the 401s too

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        if name not in static:
            raise HTTPException(404, f"no static file {name!r}")
        content, media_type = static[name]
        return Response(content, media_type=media_type)

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return await static_file("index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return await static_file(FAVICON)

    @app.get("/api/runs")
    async def list_runs() -> dict[str, Any]:
        return {"runs": [run.describe() for run in runs.values()], "limits": vars(limits)}

    @app.get("/api/runs/{run_id}/samples/{index}")
    async def sample(run_id: str, index: int) -> Response:
        with _admitted(gate):
            content = await gate.run(_sample_png, _run(runs, run_id), index)
        return Response(content, media_type="image/png")

    @app.get("/runs/{run_id}/report.html", include_in_schema=False)
    async def report(run_id: str) -> Response:
        content = await run_in_threadpool(_run(runs, run_id).read_report)
        return Response(content, media_type="text/html")

    @app.post("/api/predict")
    async def predict_route(request: Request) -> dict[str, Any]:
        with _admitted(gate):
            fields, files = await _read_form(request, limits)
            parsed = parse_request(fields, files)
            return await gate.run(predict, _run(runs, parsed.run), parsed, limits)

    return app


@contextmanager
def _admitted(gate: Gate) -> Iterator[None]:
    """Inside ``gate`` for the block, or 503 with ``Retry-After`` when it is full."""
    try:
        with gate.admit():
            yield
    except Busy:
        raise HTTPException(
            503,
            f"busy: {gate.capacity} requests running or waiting; retry later",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from None


def _sample_png(run: ServedRun, index: int) -> bytes:
    """Test image ``index`` of ``run`` as PNG bytes (404 when the run does not offer it)."""
    try:
        image = run.sample_image(index)
    except IndexError:
        raise HTTPException(404, run.no_sample(index)) from None
    return png_bytes((image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def _run(runs: Mapping[str, ServedRun], run_id: str) -> ServedRun:
    if run_id not in runs:
        raise HTTPException(404, f"no run {run_id!r}; runs: {', '.join(runs)}")
    return runs[run_id]


async def _read_form(request: Request, limits: Limits) -> tuple[dict[str, str], dict[str, bytes]]:
    """The form's text fields and files (bytes), the body capped before it is all read."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise HTTPException(415, "send the request as multipart/form-data")
    max_body = 2 * limits.max_upload_bytes + FORM_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise HTTPException(413, f"request of {int(declared):,} bytes, over {max_body:,}")
    capped = Request(request.scope, _capped(request.receive, max_body))
    form = await capped.form(max_files=2, max_fields=MAX_FIELDS)  # malformed: 400 from Starlette
    fields, files = {}, {}
    try:
        for key, value in form.multi_items():
            if key in fields or key in files:
                raise HTTPException(400, f"field {key!r} given twice")
            if isinstance(value, UploadFile):
                files[key] = await value.read(limits.max_upload_bytes + 1)
            else:
                fields[key] = value
    finally:
        await form.close()
    return fields, files


def _capped(
    receive: Callable[[], Awaitable[dict[str, Any]]], max_body: int
) -> Callable[[], Awaitable[dict[str, Any]]]:
    """``receive`` that stops a body (of any declared length, or none) past ``max_body``."""
    received = 0

    async def capped_receive() -> dict[str, Any]:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > max_body:
            raise HTTPException(413, f"request body over {max_body:,} bytes")
        return message

    return capped_receive


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as JSON ``{"error", "status"}`` with its status code."""

    def answer(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
        return JSONResponse({"error": message, "status": status}, status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        return answer(error.status_code, str(error.detail), error.headers)

    @app.exception_handler(UploadError)
    @app.exception_handler(RunUnavailable)
    async def refused(request: Request, error: UploadError | RunUnavailable) -> Response:
        return answer(error.status, str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors()
        )
        return answer(422, problems)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        logger.exception("densetasks serve: %s %s failed", request.method, request.url.path)
        return answer(500, f"internal error ({type(error).__name__}); see the server's log")


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files as ``{name: (content, media type)}``, read once from the package."""
    files = {}
    for entry in resources.files("densetasks.serve").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if suffix in STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return files
