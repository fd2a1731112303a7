"""Pictures of predictions: panels, and the keys drawn under them (class legends, colour bars).

A task's picture (:meth:`~densetasks.tasks.base.Task.visualize`) is colours only; its key
(:meth:`~densetasks.tasks.base.Task.picture_key`) says what they mean: a :class:`ClassLegend`
(swatch + class name) or a :class:`ColourBar` (a colour map over the values shown, with their
unit). This module knows no task: it draws what a task describes. A task that colours its
values through a colour map draws its picture with the same :class:`ColourBar` it returns as
its key, so the picture and its key cannot disagree.

Two callers draw keyed pictures: ``densetasks predict``'s sheet (:func:`contact_sheet`) and
the sample pictures a run writes while it trains (:func:`keyed_picture`), which
``densetasks report`` copies.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np
from PIL import Image, ImageDraw

SHEET_MIN_HEIGHT = 128
"""Panels of smaller images are enlarged (nearest) to at least this height, to stay legible."""
LABEL_HEIGHT = 16
SWATCH = 10
"""Side of a class legend's colour square, and height of a colour bar, in pixels."""
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
class ColourBar:
    """The colours of matplotlib colour map ``colormap`` over the values ``low`` .. ``high``.

    A value ``v`` gets the colour at position ``t = (f(v) − min f) / (max f − min f)`` of the
    map, the extremes of ``f`` taken over ``[low, high]``, with ``f(v) = v``, or ``1 / v``
    for ``inverse`` (depth is coloured by inverse depth, so near is bright and the far range
    takes few colours). ``low == high`` gives every value ``t = 1``. Drawn as a bar, ``low``
    is at the left end, ``high`` at the right, and the bar is linear in ``f``.
    """

    colormap: str
    low: float
    high: float
    unit: str = ""
    inverse: bool = False

    @property
    def _ends(self) -> tuple[float, float]:
        """Colour positions ``t`` at the bar's left and right ends."""
        return (1.0, 0.0) if self.inverse else (0.0, 1.0)

    def positions(self, values: np.ndarray) -> np.ndarray:
        """Colour position ``t`` in ``[0, 1]`` of every value (float64; clipped to the bar)."""
        values = np.asarray(values, dtype=np.float64)
        if self.inverse:
            values, smallest, largest = 1.0 / values, 1.0 / self.high, 1.0 / self.low
        else:
            smallest, largest = self.low, self.high
        if largest <= smallest:
            return np.ones_like(values)
        return np.clip((values - smallest) / (largest - smallest), 0.0, 1.0)

    def colours(self, values: np.ndarray) -> np.ndarray:
        """``uint8 [..., 3]`` colour of every value."""
        return self._colour_map(self.positions(values))

    def stops(self, count: int) -> list[tuple[float, tuple[int, int, int]]]:
        """``count`` evenly spaced ``(value, colour)`` along the bar, left (``low``) to right."""
        positions = np.linspace(*self._ends, count)
        if self.inverse:
            values = 1.0 / (1.0 / self.high + positions * (1.0 / self.low - 1.0 / self.high))
        else:
            values = self.low + positions * (self.high - self.low)
        colours = self._colour_map(positions)
        return [
            (float(value), tuple(int(c) for c in colour))
            for value, colour in zip(values, colours, strict=True)
        ]

    def labels(self) -> tuple[str, str]:
        """The two ends of the bar, e.g. ``("0.52 m", "7.31 m")``."""
        return tuple(f"{value:.2f} {self.unit}".rstrip() for value in (self.low, self.high))

    def draw(self, width: int) -> np.ndarray:
        """The bar over its end labels, ``uint8 [h, width, 3]`` on white."""
        span = max(1, width - 2 * KEY_MARGIN)
        gradient = self._colour_map(np.linspace(*self._ends, span))
        bar = gradient[None].repeat(SWATCH, axis=0)
        canvas = Image.new("RGB", (width, KEY_MARGIN + SWATCH + KEY_ROW_HEIGHT), "white")
        canvas.paste(Image.fromarray(bar), (KEY_MARGIN, KEY_MARGIN))
        draw = ImageDraw.Draw(canvas)
        left, right = self.labels()
        top = KEY_MARGIN + SWATCH + 1
        draw.text((KEY_MARGIN, top), left, fill="black")
        draw.text((width - KEY_MARGIN - draw.textlength(right), top), right, fill="black")
        return np.asarray(canvas)

    def _colour_map(self, positions: np.ndarray) -> np.ndarray:
        rgb = matplotlib.colormaps[self.colormap](positions)[..., :3]
        return np.round(rgb * 255).astype(np.uint8)


PictureKey = ClassLegend | ColourBar
"""What can be drawn under a task's picture."""


def keyed_picture(picture: np.ndarray, key: PictureKey | None) -> np.ndarray:
    """``picture`` (``uint8 [H, W, 3]``, unchanged on top) with ``key`` drawn under it at
    the same width; the picture alone when there is no key."""
    if key is None:
        return picture
    return np.concatenate([picture, key.draw(picture.shape[1])], axis=0)


def contact_sheet(
    panels: Sequence[tuple[str, np.ndarray]], keys: Mapping[str, PictureKey] | None = None
) -> np.ndarray:
    """Labelled ``uint8`` RGB panels side by side, all brought to the first panel's height,
    each with its key (``keys[label]``: class legend, colour bar) drawn under it."""
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
    return keyed_picture(np.asarray(panel), key)
