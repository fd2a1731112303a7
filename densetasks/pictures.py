"""Pictures of predictions: panels, and the keys drawn under them (legends, colour bars).

A task's picture (:meth:`~densetasks.tasks.base.Task.visualize`) is colours only; its key
(:meth:`~densetasks.tasks.base.Task.picture_key`) says what they mean: a :class:`ClassLegend`
(swatch + class name of the classes shown), a :class:`ColourBar` (a colour map over the
values shown, with their unit and ticks) or an :class:`IconKey` (the code shown by example,
e.g. a sphere of normals). This module knows no task: it draws what a task describes. A task
that colours its values through a colour map draws its picture with the same
:class:`ColourBar` it returns as its key, so the picture and its key cannot disagree; two
pictures drawn side by side (a label and its prediction) share one key, :func:`joint_key`,
and so one colour range.

Two callers draw keys: ``densetasks predict``'s sheet (:func:`contact_sheet`, a key under
each panel) and the sample pictures a run writes while it trains (one key per label and
prediction pair), which ``densetasks report`` shows.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import matplotlib
import numpy as np
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw

SHEET_MIN_HEIGHT = 128
"""Panels of smaller images are enlarged (nearest) to at least this height, to stay legible."""
LABEL_HEIGHT = 16
SWATCH = 10
"""Side of a class legend's colour square, and height of a colour bar, in pixels."""
KEY_ROW_HEIGHT = 14
KEY_MARGIN = 4
TICK = 3
"""Length of a colour bar's tick marks, in pixels."""
ICON = 32
"""Side of an :class:`IconKey`'s picture, in pixels."""


@dataclass(frozen=True)
class ClassLegend:
    """A colour swatch and the class name per shown class, in class-id order, wrapped into
    rows.

    ``names`` and ``colours`` are the whole class table (by id); ``shown`` the ids drawn
    (those present in the picture), all of them when ``None``.
    """

    names: tuple[str, ...]
    colours: np.ndarray
    shown: tuple[int, ...] | None = None

    @property
    def entries(self) -> list[tuple[str, tuple[int, int, int]]]:
        """``(name, colour)`` of every shown class, in id order."""
        ids = range(len(self.names)) if self.shown is None else sorted(self.shown)
        return [(self.names[i], tuple(int(c) for c in self.colours[i])) for i in ids]

    def joined(self, other: "ClassLegend") -> "ClassLegend":
        """One legend for two pictures of the same classes: the classes shown in either."""
        if self.names != other.names or not np.array_equal(self.colours, other.colours):
            raise ValueError("cannot join the legends of two different class tables")
        if self.shown is None or other.shown is None:
            return replace(self, shown=None)
        return replace(self, shown=tuple(sorted(set(self.shown) | set(other.shown))))

    def draw(self, width: int) -> np.ndarray:
        """The legend as ``uint8 [h, width, 3]`` on white, as many rows as the names need."""
        measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        placed, x, row = [], KEY_MARGIN, 0
        for name, colour in self.entries:
            entry_width = SWATCH + 3 + math.ceil(measure.textlength(name))
            if x > KEY_MARGIN and x + entry_width > width - KEY_MARGIN:
                x, row = KEY_MARGIN, row + 1
            placed.append((x, row, name, colour))
            x += entry_width + 2 * KEY_MARGIN
        canvas = Image.new("RGB", (width, (row + 1) * KEY_ROW_HEIGHT + KEY_MARGIN), "white")
        draw = ImageDraw.Draw(canvas)
        for x, row, name, colour in placed:
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
    is at the left end, ``high`` at the right, and the bar is linear in ``f``: its ticks
    (:meth:`ticks`) sit where their values' colours are.
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
        """The two ends of the bar to three significant digits, e.g. ``("0.52 m", "7.31 m")``."""
        return tuple(f"{value:.3g} {self.unit}".rstrip() for value in (self.low, self.high))

    def ticks(self) -> list[float]:
        """Round values strictly inside the bar, left to right, for ticks between its ends:
        1, 2 and 5 times a power of ten on an inverse bar (whose far end is squeezed, so
        round values of every decade are what is readable there), matplotlib's
        ``MaxNLocator`` steps on a linear one."""
        if not self.high > self.low:
            return []
        if self.inverse and self.low > 0:
            decades = range(math.floor(math.log10(self.low)), math.ceil(math.log10(self.high)) + 1)
            values = [m * 10.0**k for k in decades for m in (1, 2, 5)]
        else:
            values = MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]).tick_values(self.low, self.high)
        return sorted(float(v) for v in values if self.low < v < self.high)

    def fractions(self, values: Sequence[float]) -> np.ndarray:
        """Where ``values`` sit along the drawn bar, 0 at its left end and 1 at its right."""
        start, end = self._ends
        return (self.positions(np.asarray(values)) - start) / (end - start)

    def draw(self, width: int) -> np.ndarray:
        """The bar over tick marks and their labels, ``uint8 [h, width, 3]`` on white: both
        ends with their unit, a mark at every round value between them (:meth:`ticks`),
        labelled where the label fits."""
        span = max(1, width - 2 * KEY_MARGIN)
        gradient = self._colour_map(np.linspace(*self._ends, span))
        bar = gradient[None].repeat(SWATCH, axis=0)
        height = KEY_MARGIN + SWATCH + TICK + KEY_ROW_HEIGHT
        canvas = Image.new("RGB", (width, height), "white")
        canvas.paste(Image.fromarray(bar), (KEY_MARGIN, KEY_MARGIN))
        draw = ImageDraw.Draw(canvas)
        bottom = KEY_MARGIN + SWATCH
        marks = [0, span - 1, *(round(f * (span - 1)) for f in self.fractions(self.ticks()))]
        for x in marks:
            draw.line((KEY_MARGIN + x, bottom, KEY_MARGIN + x, bottom + TICK - 1), fill="black")
        for x, text, anchor in self._placed_labels(draw, span):
            draw.text((KEY_MARGIN + x, bottom + TICK), text, fill="black", anchor=anchor)
        return np.asarray(canvas)

    def _placed_labels(self, draw: ImageDraw.ImageDraw, span: int) -> list[tuple[int, str, str]]:
        """``(x, text, anchor)`` of the labels drawn: the ends (left- and right-aligned),
        then every tick whose centred label keeps a gap to the labels already placed."""
        left, right = self.labels()
        placed = [(0, left, "la"), (span - 1, right, "ra")]
        taken = [(0, draw.textlength(left)), (span - 1 - draw.textlength(right), span - 1)]
        gap = draw.textlength(" ")
        ticks = self.ticks()
        for value, fraction in zip(ticks, self.fractions(ticks), strict=True):
            text = f"{value:g}"
            x = round(fraction * (span - 1))
            half = draw.textlength(text) / 2
            if all(x + half + gap < start or x - half - gap > end for start, end in taken):
                placed.append((x, text, "ma"))
                taken.append((x - half, x + half))
        return placed

    def joined(self, other: "ColourBar") -> "ColourBar":
        """One bar for two pictures coloured alike: from the lower low to the higher high."""
        if (self.colormap, self.unit, self.inverse) != (other.colormap, other.unit, other.inverse):
            raise ValueError(f"cannot join colour bars of two colour codes: {self} and {other}")
        return replace(self, low=min(self.low, other.low), high=max(self.high, other.high))

    def _colour_map(self, positions: np.ndarray) -> np.ndarray:
        rgb = matplotlib.colormaps[self.colormap](positions)[..., :3]
        return np.round(rgb * 255).astype(np.uint8)


@dataclass(frozen=True)
class IconKey:
    """A small picture that shows a colour code by example, with words beside it: e.g. a
    sphere of surface normals drawn as the task draws normals, for a code that no bar or
    list can show (a direction per colour)."""

    icon: np.ndarray
    """``uint8 [ICON, ICON, 3]`` (other sizes are drawn as they are)."""
    text: str

    def joined(self, other: "IconKey") -> "IconKey":
        """The same key for two pictures drawn alike (it does not depend on their values)."""
        if self.text != other.text or not np.array_equal(self.icon, other.icon):
            raise ValueError("cannot join two different icon keys")
        return self

    def draw(self, width: int) -> np.ndarray:
        """The icon at the left, the words wrapped to its right, ``uint8 [h, width, 3]``."""
        measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        left = KEY_MARGIN + self.icon.shape[1] + KEY_MARGIN
        lines: list[str] = []
        for word in self.text.split():
            candidate = f"{lines[-1]} {word}" if lines else word
            if lines and measure.textlength(candidate) <= width - left - KEY_MARGIN:
                lines[-1] = candidate
            else:
                lines.append(word)
        height = 2 * KEY_MARGIN + max(self.icon.shape[0], len(lines) * KEY_ROW_HEIGHT)
        canvas = Image.new("RGB", (width, height), "white")
        canvas.paste(Image.fromarray(self.icon), (KEY_MARGIN, KEY_MARGIN))
        draw = ImageDraw.Draw(canvas)
        for row, line in enumerate(lines):
            draw.text((left, KEY_MARGIN + row * KEY_ROW_HEIGHT), line, fill="black")
        return np.asarray(canvas)


PictureKey = ClassLegend | ColourBar | IconKey
"""What can be drawn under a task's picture."""


def joint_key(first: PictureKey | None, second: PictureKey | None) -> PictureKey | None:
    """One key for two pictures of one task drawn side by side (a label and its prediction):
    the classes present in either, a colour bar over both ranges; either key when the other
    picture has none. A task paints both pictures with it
    (:meth:`~densetasks.tasks.base.Task.visualize_with`), so equal values get equal colours."""
    if first is None or second is None:
        return second if first is None else first
    if type(first) is not type(second):
        raise ValueError(f"cannot join a {type(first).__name__} and a {type(second).__name__}")
    return first.joined(second)


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
