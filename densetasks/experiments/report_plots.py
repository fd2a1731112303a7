"""The report's plots from the runs' event logs, rendered to PNG bytes with matplotlib.

Figures are drawn on :class:`matplotlib.figure.Figure` with its own Agg canvas, never through
``pyplot``: importing this module does not choose or change the user's matplotlib backend.

* training loss per task over steps, one panel per run: the raw values faint, an
  exponential moving average (:func:`smoothed`, factor ``LOSS_SMOOTHING``) over them;
* effective loss weights per task over steps, one panel per multi-task run — the learned
  weights of uncertainty weighting show here as in Kendall, Gal & Cipolla (CVPR 2018),
  Fig. 7;
* validation metrics over steps, one panel per task (its primary metric), one line per run.

Runs are named by their short labels (:mod:`densetasks.experiments.report_labels`); legends
sit to the right of each panel, outside the axes, so that they never hide a curve, and every
line of a panel has its own marker and dash pattern (:func:`line_style`), so that lines lying
on each other can still be told apart.
"""

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from densetasks.experiments.run_record import RunRecord

LOSS_SMOOTHING = 0.9
"""EMA factor of the smoothed loss curves: each point is 0.9 × the previous smoothed value +
0.1 × the new raw value (bias-corrected at the start, as TensorBoard's smoothing)."""


@dataclass(frozen=True)
class Figure:
    """One rendered plot: a file-name slug, a human title and the PNG bytes."""

    slug: str
    title: str
    png: bytes


def report_figures(
    records: Sequence[RunRecord],
    primary: dict[str, str],
    higher_is_better: dict[str, dict[str, bool]],
    labels: Mapping[str, str] | None = None,
) -> list[Figure]:
    """The figures that the runs have data for (a run without events adds none).

    ``labels`` (run name -> short label) names the runs in titles and legends.
    """
    labels = labels or {}
    figures = []
    with_losses = [record for record in records if _series(record.train_events, "losses")]
    if with_losses:
        figures.append(
            _panels("losses", "Training loss per task", with_losses, _draw_losses, labels)
        )
    with_weights = [
        record
        for record in records
        if len(record.tasks) > 1 and _series(record.train_events, "weights")
    ]
    if with_weights:
        figures.append(
            _panels("loss_weights", "Effective loss weights", with_weights, _draw_weights, labels)
        )
    validation = _validation_series(records, primary, labels)
    if validation:
        figures.append(_validation_figure(validation, primary, higher_is_better))
    return figures


def _series(events: Sequence[dict[str, Any]], key: str) -> dict[str, tuple[list, list]]:
    """``name -> (steps, values)`` from the mapping ``key`` of each event that has it."""
    series: dict[str, tuple[list, list]] = {}
    for event in events:
        for name, value in (event.get(key) or {}).items():
            if value is None:
                continue
            steps, values = series.setdefault(name, ([], []))
            steps.append(event["step"])
            values.append(value)
    return series


def smoothed(values: Sequence[float], factor: float = LOSS_SMOOTHING) -> list[float]:
    """Bias-corrected exponential moving average: ``s_t = factor·s_{t-1} + (1 − factor)·x_t``,
    divided by ``1 − factor^t`` so that the first points are not pulled towards 0."""
    average, result = 0.0, []
    for count, value in enumerate(values, start=1):
        average = factor * average + (1 - factor) * value
        result.append(average / (1 - factor**count))
    return result


MARKERS = ("o", "s", "^", "D", "v", "P", "X")
DASHES = ("-", "--", "-.", ":")
MARKS_PER_LINE = 8
"""About this many markers per line: enough to tell lines apart, few enough to see them."""


def line_style(index: int, points: int) -> dict[str, Any]:
    """Keyword arguments of ``Axes.plot`` that set line ``index`` of a panel apart even where
    it lies on another line (two tasks with equal loss weights): its own hollow marker and
    dash pattern, the markers at every ``k``-th point starting at a point of its own, so that
    lines on top of each other still show each one's markers."""
    every = max(1, points // MARKS_PER_LINE)
    return {
        "marker": MARKERS[index % len(MARKERS)],
        "linestyle": DASHES[index % len(DASHES)],
        "markevery": (index % every, every),
        "markersize": 4,
        "markerfacecolor": "none",
    }


def _draw_losses(axes: Axes, record: RunRecord) -> None:
    series = _series(record.train_events, "losses")
    for index, (task, (steps, values)) in enumerate(series.items()):
        (raw,) = axes.plot(steps, values, alpha=0.25, linewidth=0.8)
        style = line_style(index, len(steps))
        axes.plot(steps, smoothed(values), color=raw.get_color(), label=task, **style)
    if all(value > 0 for _, values in series.values() for value in values):
        axes.set_yscale("log")
    axes.set_ylabel("loss")


def _draw_weights(axes: Axes, record: RunRecord) -> None:
    series = _series(record.train_events, "weights")
    for index, (task, (steps, values)) in enumerate(series.items()):
        axes.plot(steps, values, label=task, **line_style(index, len(steps)))
    axes.set_ylabel("weight")


def _panels(
    slug: str,
    title: str,
    records: Sequence[RunRecord],
    draw: Callable[[Axes, RunRecord], None],
    labels: Mapping[str, str],
) -> Figure:
    """One panel per run, drawn by ``draw``, titled by the run's label."""
    figure, axes_list = _grid(len(records))
    for axes, record in zip(axes_list, records, strict=False):
        draw(axes, record)
        axes.set_title(labels.get(record.name, record.name), fontsize=9)
        axes.set_xlabel("step")
        legend_outside(axes)
        axes.grid(alpha=0.3)
    return Figure(slug, title, _png(figure))


def legend_outside(axes: Axes) -> None:
    """The legend to the right of the axes, top-aligned: it never covers a curve."""
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def _validation_series(
    records: Sequence[RunRecord], primary: dict[str, str], labels: Mapping[str, str]
) -> dict[str, dict[str, tuple[list, list]]]:
    """``task -> run label -> (steps, primary metric values)`` from validation events."""
    by_task: dict[str, dict[str, tuple[list, list]]] = {}
    for record in records:
        for event in record.eval_events:
            if event.get("split") != "val":
                continue
            for task, values in (event.get("metrics") or {}).items():
                metric = primary.get(task)
                if metric not in values:
                    continue
                label = labels.get(record.name, record.name)
                steps, points = by_task.setdefault(task, {}).setdefault(label, ([], []))
                steps.append(event["step"])
                points.append(values[metric])
    return by_task


def _validation_figure(
    series: dict[str, dict[str, tuple[list, list]]],
    primary: dict[str, str],
    higher_is_better: dict[str, dict[str, bool]],
) -> Figure:
    title = "Validation metrics over training"
    figure, axes_list = _grid(len(series))
    for axes, (task, runs) in zip(axes_list, series.items(), strict=False):
        for index, (name, (steps, values)) in enumerate(runs.items()):
            axes.plot(steps, values, label=name, **line_style(index, len(steps)))
        metric = primary[task]
        arrow = "↑" if higher_is_better.get(task, {}).get(metric, True) else "↓"
        axes.set_title(f"{task}: {metric} {arrow}", fontsize=9)
        axes.set_xlabel("step")
        legend_outside(axes)
        axes.grid(alpha=0.3)
    return Figure("validation", title, _png(figure))


PANEL_SIZE = (3.9, 2.8)
"""Inches per panel (with its legend). Rows of three at ``DPI`` are 1170 px wide: the
report page's width (1200 px at most, ``report_html``), so a 1280-px window shows the plots
at their own size."""
DPI = 100


def _grid(count: int) -> tuple[MplFigure, list[Axes]]:
    """A figure with ``count`` panels in rows of up to three; unused panels hidden."""
    columns = min(3, count)
    rows = math.ceil(count / columns)
    figure = blank_figure((PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows))
    flat = list(figure.subplots(rows, columns, squeeze=False).flat)
    for unused in flat[count:]:
        unused.set_visible(False)
    return figure, flat[:count]


def _png(figure: MplFigure) -> bytes:
    """The PNG, untitled: the report's heading names the figure."""
    return figure_png(figure, dpi=DPI)


def blank_figure(size: tuple[float, float]) -> MplFigure:
    """An empty figure of ``size`` inches on an Agg canvas, outside pyplot (reports, sweeps)."""
    figure = MplFigure(figsize=size)
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure: MplFigure, dpi: int) -> bytes:
    """Lay out ``figure`` and render it to PNG bytes (reports and sweeps)."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
