"""Δm: the mean relative gain of a multi-task model over single-task baselines, in percent.

Lopes et al. (WACV 2023, Sec. 4.1, "MTL metrics") and Popovic et al. (CVPR 2021, Sec. 5.3) both use

    Δ = 1/n Σ_i (−1)^{g_i} (m_i − b_i) / b_i            (× 100 %)

with ``m_i`` the multi-task model's metric on task ``i``, ``b_i`` the single-task model's,
and ``g_i = 1`` when a lower value is better, so a positive Δ always means "better than one
network per task".

The papers pick **one metric per task** (mIoU, RMSE, mean angle error, ...): pass ``primary``
for that. Without ``primary`` every metric a task reports counts: the sign-corrected relative
gains are first averaged *within* each task and then *over* tasks, so a task that reports
five metrics weighs as much as a task that reports one.
"""

import math
from collections.abc import Mapping

MetricTable = Mapping[str, Mapping[str, float]]
"""``task -> metric name -> value``."""


def relative_gain(
    value: float, baseline: float, higher_is_better: bool, name: str = "metric"
) -> float:
    """``(−1)^g (m − b) / b`` for one metric (a fraction, not percent); ``b`` must not be 0."""
    if baseline == 0:
        raise ValueError(f"baseline {name} is 0: its relative gain is undefined")
    gain = (value - baseline) / baseline
    return gain if higher_is_better else -gain


def delta_m(
    metrics: MetricTable,
    baselines: MetricTable,
    higher_is_better: Mapping[str, Mapping[str, bool]],
    primary: Mapping[str, str] | None = None,
) -> float:
    """Δm in percent of ``metrics`` against ``baselines`` over every task in ``metrics``.

    ``primary`` maps each task to the one metric that counts for it (the papers' way);
    without it all of a task's metrics are averaged first, then the tasks (see module doc).
    Raises ``ValueError`` naming the task / metric that is missing from the baselines or
    from ``higher_is_better``, or whose baseline is zero.
    """
    if not metrics:
        raise ValueError("delta_m needs at least one task")
    task_gains = [
        _task_gain(task, task_metrics, baselines, higher_is_better, primary)
        for task, task_metrics in metrics.items()
    ]
    return 100.0 * sum(task_gains) / len(task_gains)


def _task_gain(
    task: str,
    task_metrics: Mapping[str, float],
    baselines: MetricTable,
    higher_is_better: Mapping[str, Mapping[str, bool]],
    primary: Mapping[str, str] | None,
) -> float:
    """The mean sign-corrected relative gain of one task over its chosen metric(s)."""
    if task not in baselines:
        known = ", ".join(sorted(baselines)) or "none"
        raise ValueError(f"task {task!r} has no single-task baseline (baselines: {known})")
    if primary is None:
        # A metric one side could not measure (NaN, e.g. instance AP of a run without
        # semantic predictions) has no relative gain: it is left out of the average.
        names = [
            name
            for name, value in task_metrics.items()
            if not math.isnan(value) and not math.isnan(baselines.get(task, {}).get(name, 0.0))
        ]
    elif task in primary:
        names = [primary[task]]
    else:
        raise ValueError(f"no primary metric given for task {task!r}")
    if not names:
        raise ValueError(f"task {task!r} reports no metrics")
    gains = []
    for name in names:
        if name not in task_metrics:
            raise ValueError(f"task {task!r} does not report metric {name!r}")
        if name not in baselines[task]:
            raise ValueError(f"baseline of task {task!r} lacks metric {name!r}")
        if name not in higher_is_better.get(task, {}):
            raise ValueError(f"direction (higher_is_better) of {task}/{name} is unknown")
        gains.append(
            relative_gain(
                task_metrics[name],
                baselines[task][name],
                higher_is_better[task][name],
                name=f"{task}/{name}",
            )
        )
    return sum(gains) / len(gains)
