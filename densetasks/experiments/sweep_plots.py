"""The sweep figure in the style of Kendall, Gal & Cipolla (CVPR 2018), Fig. 2, as PNG bytes.

Top row, one panel per task: the task's primary metric against the setting. With one swept
key of positive numbers the x axis is that key's value (logarithmic when the values span
two decades or more, as loss weights do); otherwise one tick per run, labelled with its
values. Runs added with ``--mark`` (e.g. uncertainty weighting) have no setting: they are
drawn as dashed horizontal lines, as the learned weighting is in Fig. 2.

Bottom row, one panel per pair of tasks: task A's metric against task B's for every run, the
Pareto front of that pair (:func:`densetasks.experiments.sweep.pareto_front`, respecting each
metric's direction) drawn as a staircase, marked runs as stars.

This module depends on :mod:`densetasks.experiments.sweep`, never the reverse: pass
:func:`sweep_figure_png` to :func:`~densetasks.experiments.sweep.write_sweep` for ``sweep.png``.
Drawing goes through an Agg canvas, not ``pyplot``, so the user's backend is left alone.
"""

import itertools
from collections.abc import Sequence

from matplotlib.axes import Axes

from densetasks.experiments.report_plots import blank_figure, figure_png
from densetasks.experiments.sweep import SweepEntry, SweepResult, format_value, pareto_front

_MARK_COLOURS = ("tab:red", "tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:cyan")


def sweep_figure_png(result: SweepResult) -> bytes:
    """The whole figure as PNG bytes."""
    tasks = list(result.primary)
    pairs = list(itertools.combinations(tasks, 2))
    columns = max(len(tasks), len(pairs), 1)
    rows = 2 if pairs else 1
    figure = blank_figure((4.2 * columns, 3.6 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for column, task in enumerate(tasks):
        _draw_metric_against_setting(axes[0][column], result, task)
    for column, (task_a, task_b) in enumerate(pairs):
        _draw_pair(axes[1][column], result, task_a, task_b)
    for row in axes:
        for axis in row:
            if not axis.has_data():
                axis.set_visible(False)
    return figure_png(figure, dpi=110)


def _metric_label(result: SweepResult, task: str) -> str:
    name = result.primary[task]
    arrow = "↑" if result.higher_is_better[task][name] else "↓"
    return f"{task} {name} {arrow}"


def _value(entry: SweepEntry, result: SweepResult, task: str) -> float:
    return entry.metrics[task][result.primary[task]]


def _numeric_axis(swept: Sequence[SweepEntry], keys: Sequence[str]) -> list[float] | None:
    """The swept key's values when exactly one key is swept over positive numbers."""
    if len(keys) != 1:
        return None
    values = [entry.overrides.get(keys[0]) for entry in swept]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return [float(v) for v in values] if numeric and min(values, default=0) > 0 else None


def _draw_metric_against_setting(axis: Axes, result: SweepResult, task: str) -> None:
    swept = [entry for entry in result.entries if not entry.marked]
    numeric = _numeric_axis(swept, result.keys)
    if numeric is not None:
        order = sorted(range(len(swept)), key=numeric.__getitem__)
        xs = [numeric[i] for i in order]
        axis.set_xlabel(result.keys[0])
        if max(xs) / min(xs) >= 100:
            axis.set_xscale("log")
    else:
        order = list(range(len(swept)))
        xs = list(range(len(swept)))
        axis.set_xticks(xs)
        axis.set_xticklabels(
            [_setting_label(swept[i], result.keys) for i in order],
            rotation=30,
            ha="right",
            fontsize=7,
        )
    ys = [_value(swept[i], result, task) for i in order]
    axis.plot(xs, ys, "o-", color="tab:blue", label="fixed setting")
    for colour, entry in zip(itertools.cycle(_MARK_COLOURS), _marked(result), strict=False):
        axis.axhline(_value(entry, result, task), color=colour, linestyle="--", label=entry.name)
    axis.set_title(_metric_label(result, task))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)


def _setting_label(entry: SweepEntry, keys: Sequence[str]) -> str:
    return (
        ", ".join(
            f"{key.rsplit('.', 1)[-1]}={format_value(entry.overrides[key])}"
            for key in keys
            if key in entry.overrides
        )
        or entry.name
    )


def _marked(result: SweepResult) -> list[SweepEntry]:
    return [entry for entry in result.entries if entry.marked]


def _draw_pair(axis: Axes, result: SweepResult, task_a: str, task_b: str) -> None:
    entries = result.entries
    points = [{task: _value(entry, result, task) for task in (task_a, task_b)} for entry in entries]
    directions = {task: result.primary_directions()[task] for task in (task_a, task_b)}
    front = pareto_front(points, directions)
    swept = [i for i, entry in enumerate(entries) if not entry.marked]
    axis.scatter(
        [points[i][task_a] for i in swept],
        [points[i][task_b] for i in swept],
        color="tab:blue",
        label="fixed setting",
    )
    for i in swept:
        axis.annotate(
            _setting_label(entries[i], result.keys),
            (points[i][task_a], points[i][task_b]),
            fontsize=6,
            xytext=(3, 3),
            textcoords="offset points",
        )
    marked = [i for i, entry in enumerate(entries) if entry.marked]
    for colour, i in zip(itertools.cycle(_MARK_COLOURS), marked, strict=False):
        axis.scatter(
            [points[i][task_a]],
            [points[i][task_b]],
            marker="*",
            s=160,
            color=colour,
            label=entries[i].name,
        )
    xs, ys = _staircase([points[i] for i in front], task_a, task_b, directions)
    axis.plot(xs, ys, color="black", linewidth=1, label="Pareto front")
    axis.set_xlabel(_metric_label(result, task_a))
    axis.set_ylabel(_metric_label(result, task_b))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)


def _staircase(
    front: list[dict[str, float]], task_a: str, task_b: str, directions: dict[str, bool]
) -> tuple[list[float], list[float]]:
    """The step line through the front's points, from the best on ``task_a`` to the worst.

    Between two neighbours the line keeps the better ``task_b`` value of the earlier point
    until it reaches the next ``task_a`` value: the boundary of the dominated region.
    """
    ordered = sorted(front, key=lambda p: p[task_a], reverse=directions[task_a])
    xs: list[float] = []
    ys: list[float] = []
    for point in ordered:
        if xs:
            xs.append(point[task_a])
            ys.append(ys[-1])
        xs.append(point[task_a])
        ys.append(point[task_b])
    return xs, ys
