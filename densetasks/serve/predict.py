"""``POST /api/predict`` without the web: a checked request in, a JSON-ready answer out.

The form is read into a :class:`PredictRequest` (every field checked, errors as
:class:`~densetasks.serve.uploads.UploadError` with their HTTP status), then
:func:`predict` runs the run's :class:`~densetasks.engine.inference.Predictor` exactly as
``densetasks predict`` does: the same palette checks, the same pictures, the same composite.
"""

import base64
import io
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from densetasks.data.palettes import check_palette
from densetasks.errors import DenseTasksError
from densetasks.serve.describe import legend, raw_values
from densetasks.serve.registry import PALETTE, RULES, ServedRun
from densetasks.serve.uploads import Limits, UploadError, decode_image, decode_palette

FIELDS = {"run", "image", "sample", "palette", "rule", "seed", "task", "raw"}
SEED_RANGE = range(2**32)
TRUE, FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


@dataclass
class PredictRequest:
    """A checked predict request: ``image`` bytes or a test image index ``sample``, and at most
    one palette source (``palette`` PNG bytes or ``rule`` with ``seed`` and ``task``)."""

    run: str
    image: bytes | None = None
    sample: int | None = None
    palette: bytes | None = None
    rule: str | None = None
    seed: int = 0
    task: str | None = None
    raw: bool = False


def parse_request(fields: Mapping[str, str], files: Mapping[str, bytes]) -> PredictRequest:
    """Text ``fields`` and uploaded ``files`` of the form -> a request, or a 400 naming the
    field that is wrong."""
    unknown = sorted((set(fields) | set(files)) - FIELDS)
    if unknown:
        raise UploadError(400, f"unknown field(s) {unknown}; known: {sorted(FIELDS)}")
    misplaced = sorted((set(fields) & {"image", "palette"}) | (set(files) - {"image", "palette"}))
    if misplaced:
        raise UploadError(400, f"field(s) {misplaced}: image and palette are files, the rest text")
    if not fields.get("run"):
        raise UploadError(400, "run: missing (an id from GET /api/runs)")
    request = PredictRequest(
        run=fields["run"],
        image=files.get("image"),
        sample=_integer(fields, "sample"),
        palette=files.get("palette"),
        rule=fields.get("rule") or None,
        seed=_integer(fields, "seed", SEED_RANGE) or 0,
        task=fields.get("task") or None,
        raw=_flag(fields, "raw"),
    )
    if (request.image is None) == (request.sample is None):
        raise UploadError(400, "give exactly one of image (a file) and sample (a test image index)")
    if request.palette is not None and request.rule is not None:
        raise UploadError(400, "give at most one of palette (a PNG) and rule")
    if request.rule is not None and request.rule not in RULES:
        raise UploadError(400, f"rule: {request.rule!r} is not one of {', '.join(RULES)}")
    if request.task is not None and request.rule != "S":
        raise UploadError(400, "task: only rule S takes a task")
    return request


def predict(run: ServedRun, request: PredictRequest, limits: Limits) -> dict[str, Any]:
    """Every task's picture (and raw values if asked), the composite output and its palette
    for a palette-conditioned run given one, and the timing, as a JSON-ready dict."""
    started = time.perf_counter()
    image = _image(run, request, limits)
    palette = _palette(run, request, image, limits)
    conditions = {PALETTE: palette} if palette is not None else None
    forward = time.perf_counter()
    prediction = run.predictor(image, conditions, rules=False)  # the page shows no rule pass
    forward_ms = (time.perf_counter() - forward) * 1000
    tasks = run.predictor.tasks
    answer: dict[str, Any] = {
        "run": run.id,
        "height": int(image.shape[-2]),
        "width": int(image.shape[-1]),
        "tasks": {},
        "composite": None,
        "palette": None,
    }
    for name, picture in prediction.pictures(tasks).items():
        value = prediction.predictions[name]
        entry = {"png": png_base64(picture), "legend": legend(tasks[name], value)}
        if request.raw:
            entry["values"] = raw_values(tasks[name], prediction.outputs[name])
        answer["tasks"][name] = entry
    if palette is not None:
        answer["composite"] = {"png": png_base64(prediction.composite_picture(tasks))}
        ids = palette.to(torch.uint8).numpy()
        answer["palette"] = {
            "png": png_base64(ids),
            "ids": base64.b64encode(ids.tobytes()).decode("ascii"),
        }
    answer["timing"] = {
        "forward_ms": round(forward_ms, 2),
        "total_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    return answer


def png_bytes(array: np.ndarray) -> bytes:
    """A ``uint8`` ``[H, W, 3]`` picture or ``[H, W]`` grey map as a PNG file's bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_base64(array: np.ndarray) -> str:
    """:func:`png_bytes` as base64 text, for JSON."""
    return base64.b64encode(png_bytes(array)).decode("ascii")


def _image(run: ServedRun, request: PredictRequest, limits: Limits) -> torch.Tensor:
    if request.image is not None:
        return decode_image(request.image, limits)
    try:
        return run.sample_image(request.sample)
    except IndexError:
        raise UploadError(404, f"sample: {run.no_sample(request.sample)}") from None


def _palette(
    run: ServedRun, request: PredictRequest, image: torch.Tensor, limits: Limits
) -> torch.Tensor | None:
    """The Task Palette the request asks for, checked against the run and the image."""
    if request.palette is None and request.rule is None:
        return None
    if not run.takes_palette:
        raise UploadError(400, f"run {run.id!r} takes no Task Palette (not a CompositeTasking run)")
    names = list(run.predictor.tasks)
    try:
        if request.palette is not None:
            palette = decode_palette(request.palette, limits)
            source = "palette"
        else:
            options = {"task": request.task} if request.task else {}
            palette = run.predictor.rule_palette(image, request.rule, request.seed, **options)
            source = f"rule {request.rule}"
        check_palette(palette, names, image.shape[-2:], source)
    except DenseTasksError as error:
        raise UploadError(400, str(error)) from None
    return palette


def _integer(fields: Mapping[str, str], name: str, bounds: range | None = None) -> int | None:
    text = fields.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise UploadError(400, f"{name}: {text!r} is not an integer") from None
    if bounds is not None and value not in bounds:
        raise UploadError(400, f"{name}: {value} is not in [{bounds.start}, {bounds.stop})")
    return value


def _flag(fields: Mapping[str, str], name: str) -> bool:
    text = fields.get(name, "").strip().lower()
    if text not in TRUE | FALSE:
        raise UploadError(400, f"{name}: {text!r} is not a yes/no value (1, 0, true, false)")
    return text in TRUE
