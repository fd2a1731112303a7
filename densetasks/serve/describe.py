"""What the page needs to draw and read a task's prediction: its meaning, legend and values.

The pictures are the tasks' own (:meth:`~densetasks.tasks.base.Task.visualize`); this module
adds what a picture alone cannot say, from the task's own hooks and without knowing any task:
the class names behind the colours and the unit of the values (:meth:`Task.meaning`), the
colour bar behind the shades (:meth:`Task.picture_key`), the colours in words otherwise
(:attr:`Task.picture_colours`), and the values under the mouse
(:meth:`Task.prediction_values`, sent as little-endian arrays so the page reads them with a
typed array, not one JSON number per pixel). The page formats a value as the meaning says:
a class name, or the channels with ``digits`` decimals and the unit.
"""

import base64
from typing import Any

import numpy as np
import torch

from densetasks.pictures import ColourBar
from densetasks.tasks.base import Task

COLOUR_BAR_STOPS = 9
"""Colours sampled along a colour bar (the page draws a CSS gradient through them)."""


def describe_task(task: Task) -> dict[str, Any]:
    """The run-level description of a task for ``GET /api/runs``: how to read its values
    (``unit``, ``digits``, ``channels``) and, for class ids, every class's name and colour
    (the colour the task's own picture gives the id)."""
    meaning = task.meaning()
    description: dict[str, Any] = {
        "name": task.name,
        "meaning": meaning.text,
        "unit": meaning.unit,
        "digits": meaning.digits,
        "channels": list(meaning.channels),
    }
    if meaning.classes:
        ids = torch.arange(len(meaning.classes))[None]
        colours = task.visualize(ids)[0].tolist()
        description["classes"] = [
            {"id": index, "name": name, "colour": colours[index]}
            for index, name in enumerate(meaning.classes)
        ]
    return description


def legend(task: Task, value: Any) -> dict[str, Any]:
    """The legend of one prediction (the task's evaluation input): the classes present, the
    colour bar of its picture (values and colours, left to right, with their unit), or the
    picture's colours in words."""
    classes = task.meaning().classes
    if classes:
        present = torch.unique(value).tolist()
        return {"kind": "classes", "ids": [int(i) for i in present if 0 <= i < len(classes)]}
    key = task.picture_key(value)
    if isinstance(key, ColourBar):
        stops = [
            {"value": round(stop, 4), "colour": list(colour)}
            for stop, colour in key.stops(COLOUR_BAR_STOPS)
        ]
        return {"kind": "colourbar", "unit": key.unit, "stops": stops}
    return {"kind": "text", "text": task.picture_colours}


def raw_values(task: Task, output: torch.Tensor) -> dict[str, Any]:
    """The values :meth:`Task.meaning` describes (:meth:`Task.prediction_values` of the raw
    output ``[C, H, W]``) as ``{dtype, shape, data}``: class ids as ``uint8``, everything
    else as ``float32``; ``data`` base64 of the little-endian array in C order."""
    with torch.no_grad():
        values = task.prediction_values(output[None])[0]
    dtype = "<u1" if task.meaning().classes else "<f4"
    array = values.detach().cpu().numpy().astype(dtype)
    return {
        "dtype": "uint8" if array.dtype.itemsize == 1 else "float32",
        "shape": list(array.shape),
        "data": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii"),
    }
