"""Pictures of predictions: panels, class legends, depth colour bars.

A task's picture (:meth:`~densetasks.tasks.base.Task.visualize`) is colours only; its key
says what they mean: a class legend (swatch + class name) for a task with class names, a
colour bar in metres for depth. Two callers draw them alike: ``densetasks predict``'s sheet
(:func:`contact_sheet`) and the sample pictures a run writes while it trains
(:func:`keyed_picture`), which ``densetasks report`` copies. Both have a task, its picture
and the decoded prediction or label the picture shows (class ids, depth in metres), which is
all a key needs.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw

from densetasks.tasks.base import Task
from densetasks.tasks.depth import Depth

SHEET_MIN_HEIGHT = 128
"""Panels of smaller images are enlarged (nearest) to at least this height, to stay legible."""
LABEL_HEIGHT = 16
SWATCH = 10
"""Side of a class legend's colour square, and height of the depth colour bar, in pixels."""
KEY_ROW_HEIGHT = 14
KEY_MARGIN = 4


@dataclass(frozen=True)
class ClassLegend:
    """A colour swatch and the class name per class, in class-id order, wrapped into rows."""

    names: tuple[str, ...]
    colours: np.ndarray

    def draw(self, width: int) -> np.ndarray:
        """The legend as ``uint8 [h, width, 3]`` on white, as many rows as the names need."""
        measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        entries, x, row = [], KEY_MARGIN, 0
        for name, colour in zip(self.names, self.colours, strict=True):
            entry_width = SWATCH + 3 + math.ceil(measure.textlength(name))
            if x > KEY_MARGIN and x + entry_width > width - KEY_MARGIN:
                x, row = KEY_MARGIN, row + 1
            entries.append((x, row, name, tuple(int(c) for c in colour)))
            x += entry_width + 2 * KEY_MARGIN
        canvas = Image.new("RGB", (width, (row + 1) * KEY_ROW_HEIGHT + KEY_MARGIN), "white")
        draw = ImageDraw.Draw(canvas)
        for x, row, name, colour in entries:
            top = KEY_MARGIN + row * KEY_ROW_HEIGHT
            draw.rectangle((x, top, x + SWATCH - 1, top + SWATCH - 1), fill=colour, outline="grey")
            draw.text((x + SWATCH + 3, top - 1), name, fill="black")
        return np.asarray(canvas)


@dataclass(frozen=True)
class DepthColourBar:
    """The depth picture's colours from the nearest to the farthest shown depth, in metres.

    The picture colours inverse depth (:meth:`~densetasks.tasks.depth.Depth.visualize`), so
    the bar is linear in ``1 / depth``: the nearest depth (bright) left, the farthest right.
    """

    low: float
    high: float

    def labels(self) -> tuple[str, str]:
        """The two ends of the bar: ``("0.52 m", "7.31 m")``."""
        return f"{self.low:.2f} m", f"{self.high:.2f} m"

    def draw(self, width: int) -> np.ndarray:
        """The bar over the labels, ``uint8 [h, width, 3]`` on white."""
        span = max(1, width - 2 * KEY_MARGIN)
        gradient = matplotlib.colormaps["magma"](np.linspace(1.0, 0.0, span))[:, :3]
        bar = np.round(gradient * 255).astype(np.uint8)[None].repeat(SWATCH, axis=0)
        canvas = Image.new("RGB", (width, KEY_MARGIN + SWATCH + KEY_ROW_HEIGHT), "white")
        canvas.paste(Image.fromarray(bar), (KEY_MARGIN, KEY_MARGIN))
        draw = ImageDraw.Draw(canvas)
        near, far = self.labels()
        top = KEY_MARGIN + SWATCH + 1
        draw.text((KEY_MARGIN, top), near, fill="black")
        draw.text((width - KEY_MARGIN - draw.textlength(far), top), far, fill="black")
        return np.asarray(canvas)


PictureKey = ClassLegend | DepthColourBar
"""What can be drawn under a task's picture."""


def task_key(task: Task, value: Any, mask: torch.Tensor | None = None) -> PictureKey | None:
    """The key of ``task``'s picture of ``value`` (its decoded prediction or label): a class
    legend for a task with class names; for depth (``[1, H, W]`` metres) a colour bar over
    the depths shown, inside ``mask`` if given, since the picture's colours span exactly
    them. ``None`` for tasks drawn otherwise, and for a depth with no labelled pixel."""
    if getattr(task, "class_names", None):
        return ClassLegend(tuple(task.class_names), task.colours)
    if isinstance(task, Depth):
        return _depth_bar(value, mask)
    return None


def _depth_bar(depth: torch.Tensor, mask: torch.Tensor | None) -> DepthColourBar | None:
    """The colour bar of a depth ``[1, H, W]``: the range of its labelled (positive) pixels,
    inside ``mask`` if given; ``None`` when no pixel has a depth."""
    values = depth[0].detach().float().cpu()
    shown = values > 0
    if mask is not None:
        shown &= mask.cpu()
    if not shown.any():
        return None
    return DepthColourBar(float(values[shown].min()), float(values[shown].max()))


def keyed_picture(
    task: Task, picture: np.ndarray, value: Any, mask: torch.Tensor | None = None
) -> np.ndarray:
    """``picture`` (``uint8 [H, W, 3]``, unchanged on top) with the key of ``task`` for
    ``value`` (see :func:`task_key`) drawn under it at the same width; the picture alone
    when the task has no key."""
    return _with_key(picture, task_key(task, value, mask))


def _with_key(picture: np.ndarray, key: PictureKey | None) -> np.ndarray:
    """``picture`` over ``key`` drawn at its width."""
    if key is None:
        return picture
    return np.concatenate([picture, key.draw(picture.shape[1])], axis=0)


def contact_sheet(
    panels: Sequence[tuple[str, np.ndarray]], keys: Mapping[str, PictureKey] | None = None
) -> np.ndarray:
    """Labelled ``uint8`` RGB panels side by side, all brought to the first panel's height,
    each with its key (``keys[label]``: class legend, depth colour bar) drawn under it."""
    height = panels[0][1].shape[0]
    scale = max(1, math.ceil(SHEET_MIN_HEIGHT / height))
    columns = [
        _sheet_column(label, picture, height, scale, (keys or {}).get(label))
        for label, picture in panels
    ]
    tallest = max(column.shape[0] for column in columns)
    padded = [
        np.pad(column, ((0, tallest - column.shape[0]), (0, 0), (0, 0)), constant_values=255)
        for column in columns
    ]
    return np.concatenate(padded, axis=1)


def _sheet_column(
    label: str, picture: np.ndarray, height: int, scale: int, key: PictureKey | None
) -> np.ndarray:
    """One panel: its label, the picture at ``height`` times ``scale``, its key below."""
    image = Image.fromarray(picture)
    width = round(picture.shape[1] * height / picture.shape[0])
    image = image.resize((width * scale, height * scale), Image.Resampling.NEAREST)
    panel = Image.new("RGB", (image.width, image.height + LABEL_HEIGHT), "white")
    panel.paste(image, (0, LABEL_HEIGHT))
    ImageDraw.Draw(panel).text((3, 2), label, fill="black")
    return _with_key(np.asarray(panel), key)
