"""What the page needs to draw and read a task's prediction: its kind, legend and raw values.

The pictures are the tasks' own (:meth:`~densetasks.tasks.base.Task.visualize`); this module
adds what a picture alone cannot say: the class names behind the colours, the depth in metres
behind the magma shades, and the values under the mouse (sent as little-endian arrays so the
page reads them with a typed array, not one JSON number per pixel).
"""

import base64
from typing import Any

import matplotlib
import numpy as np
import torch

from densetasks.metrics.instance_segmentation import InstancePrediction
from densetasks.tasks.base import Task
from densetasks.tasks.depth import Depth
from densetasks.tasks.edges import BinaryMapTask
from densetasks.tasks.instance import InstanceOffsets
from densetasks.tasks.normals import SurfaceNormals
from densetasks.tasks.semseg import SemanticSegmentation

COLOUR_BAR_STOPS = 9
"""Colours sampled along the depth colour bar (the page draws a CSS gradient through them)."""


def task_kind(task: Task) -> str:
    """How the page reads the task's values: ``classes``, ``depth`` (m), ``normals``,
    ``probability``, ``offsets`` (px) or ``values`` for a task it does not know."""
    kinds = (
        (SemanticSegmentation, "classes"),
        (Depth, "depth"),
        (SurfaceNormals, "normals"),
        (BinaryMapTask, "probability"),
        (InstanceOffsets, "offsets"),
    )
    return next((kind for cls, kind in kinds if isinstance(task, cls)), "values")


def class_names(task: Task) -> list[str] | None:
    """The class names of a classification task (``class 3`` where the run has none)."""
    if not isinstance(task, SemanticSegmentation):
        return None
    names = task.class_names or []
    return [names[i] if i < len(names) else f"class {i}" for i in range(task.num_classes)]


def describe_task(task: Task) -> dict[str, Any]:
    """The run-level description of a task for ``GET /api/runs``."""
    names = class_names(task)
    description: dict[str, Any] = {"name": task.name, "kind": task_kind(task)}
    if names is not None:
        colours = task.colours.tolist()
        description["classes"] = [
            {"id": index, "name": name, "colour": colours[index]}
            for index, name in enumerate(names)
        ]
    return description


def legend(task: Task, value: Any) -> dict[str, Any]:
    """The legend of one prediction: the classes present, or the depth colour bar in metres
    (the picture normalises inverse depth per image, so the bar does too)."""
    kind = task_kind(task)
    if kind == "classes":
        present = torch.unique(value).tolist()
        return {"kind": "classes", "ids": [int(i) for i in present if 0 <= i < task.num_classes]}
    if kind == "depth":
        return {"kind": "colourbar", "unit": "m", "stops": _depth_stops(value)}
    text = {
        "normals": "RGB = (n + 1) / 2; x right, y down, z forward",
        "probability": "black 0 → white 1",
        "offsets": "hue = direction, brightness = length",
    }
    return {"kind": "text", "text": text.get(kind, "")}


def _depth_stops(value: torch.Tensor) -> list[dict[str, Any]]:
    """Colour bar stops ``{value (m), colour}``, near (bright) to far (dark), as
    :meth:`Depth.visualize` shades: magma of the min-max normalised inverse depth."""
    depth = value.double()
    depth = depth[depth > 0]
    if depth.numel() == 0:
        return []
    low, high = (1.0 / depth.max()).item(), (1.0 / depth.min()).item()
    stops = []
    for t in np.linspace(1.0, 0.0, COLOUR_BAR_STOPS):
        inverse = low + t * (high - low)
        colour = np.round(np.asarray(matplotlib.colormaps["magma"](t)[:3]) * 255).astype(int)
        stops.append({"value": round(1.0 / inverse, 4), "colour": colour.tolist()})
    return stops


def raw_values(task: Task, value: Any) -> dict[str, Any]:
    """The decoded prediction as ``{dtype, shape, data}``: class ids as ``uint8``, everything
    else as ``float32`` (depth in m, unit normals, probabilities, offsets in px), ``data``
    base64 of the little-endian array in C order."""
    if isinstance(value, InstancePrediction):
        value = value.offsets
    dtype = "<u1" if task_kind(task) == "classes" else "<f4"
    array = value.detach().cpu().numpy().astype(dtype)
    return {
        "dtype": "uint8" if array.dtype.itemsize == 1 else "float32",
        "shape": list(array.shape),
        "data": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii"),
    }
