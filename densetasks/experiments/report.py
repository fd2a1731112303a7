"""The multi-task report: runs side by side with their single-task baselines, and Δm.

``build_report`` turns run records (:mod:`densetasks.experiments.run_record`) into one JSON-able
mapping with every number; ``comparison_table`` lays those numbers out as rows shared by the
text, Markdown and HTML renderings; ``write_report`` writes ``report.json``, ``report.md``
(with plots under ``plots/`` and sample pictures under ``samples/``) and a self-contained
``report.html``.

Baselines are matched to tasks by what each baseline run trained: one task per baseline run.
Δm (Lopes, Vu & de Charette, WACV 2023; Popovic et al., CVPR 2021;
:func:`densetasks.metrics.delta_m.delta_m`) is reported twice per run: over each task's primary
metric (the papers' way) and over all metrics (averaged within each task first). A task
without a baseline is left out of Δm and named in ``missing_baselines``.

A row may hold several seeds of one config (a :class:`~densetasks.experiments.report_seeds.
SeedGroup`), and a task several baseline seeds: every number is then mean ± sample std over
the seeds, Δm is computed per seed against the mean of the baseline's seeds, and lines where
rows are within each other's seed spread are marked (``docs/report.md``, "Seeds"). A report
whose rows are all single runs is written exactly as without seeds.

Runs are shown by short labels (``labels`` in ``report.json``, :mod:`densetasks.experiments.
report_labels`): long sweep names are cut to what tells the runs apart, and a footnote under
the table maps each shortened label back to the full name.
"""

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from densetasks.data.io import write_bytes, write_text
from densetasks.errors import DataError
from densetasks.experiments.report_html import render_html
from densetasks.experiments.report_labels import label_footnotes, short_labels
from densetasks.experiments.report_plots import Figure, report_figures
from densetasks.experiments.report_samples import SampleSet, copy_samples, markdown_samples
from densetasks.experiments.report_seeds import (
    SeedGroup,
    Spread,
    close_to_best,
    mean_std,
    mean_std_tables,
    name_by_seed,
    pairs_within_spread,
    seed_group,
)
from densetasks.experiments.run_record import RunRecord, load_run_record
from densetasks.metrics.delta_m import delta_m, relative_gain

Report = dict[str, Any]
"""``{"split", "runs": [...], "baselines": {task: ...}, "higher_is_better", "primary",
"labels": {name: short label}}``."""


def load_records(run_dirs: Sequence[Path], split: str) -> list[RunRecord]:
    """Records of ``run_dirs`` named by folder name (by the path as given where names clash)."""
    names = [Path(run_dir).name for run_dir in run_dirs]
    return [
        load_run_record(Path(run_dir), split, name if names.count(name) == 1 else str(run_dir))
        for run_dir, name in zip(run_dirs, names, strict=True)
    ]


def load_group(name: str, run_dirs: Sequence[Path], split: str) -> SeedGroup:
    """The runs of ``run_dirs`` as one row ``name``, checked to be seeds of one config."""
    return name_by_seed(seed_group(name, load_records(run_dirs, split)))


def match_baselines(baselines: Sequence[RunRecord]) -> dict[str, SeedGroup]:
    """Task name -> the single-task runs that trained only that task (its seeds).

    Several baselines of one task must be seeds of one config (:func:`seed_group`).
    """
    by_task: dict[str, list[RunRecord]] = {}
    for record in baselines:
        if len(record.tasks) != 1:
            raise DataError(
                f"baseline run {record.path} trained {len(record.tasks)} tasks "
                f"({', '.join(record.tasks)}); a baseline must train exactly one"
            )
        by_task.setdefault(record.tasks[0], []).append(record)
    return {
        task: replace(
            seed_group(f"baselines of task {task!r}", records),
            name=", ".join(record.name for record in records),
        )
        for task, records in by_task.items()
    }


def build_report(
    runs: Sequence[RunRecord | SeedGroup], baselines: Sequence[RunRecord], split: str
) -> Report:
    """Every number of the report as plain data (what ``report.json`` holds).

    Each of ``runs`` is a row: one run, or a :class:`SeedGroup` of seeds. With seeds anywhere
    the report gains ``within_spread``; with single runs only it is as it always was.
    """
    if not runs:
        raise ValueError("a report needs at least one run")
    rows = [row if isinstance(row, SeedGroup) else SeedGroup(row.name, (row,)) for row in runs]
    _check_unique_names(rows)
    by_task = match_baselines(baselines)
    higher_is_better: dict[str, dict[str, bool]] = {}
    units: dict[str, dict[str, str]] = {}
    primary: dict[str, str] = {}
    for record in [*baselines, *(record for row in rows for record in row.records)]:
        for task, directions in record.higher_is_better.items():
            higher_is_better.setdefault(task, {}).update(directions)
        for task, task_units in record.units.items():
            units.setdefault(task, {}).update(task_units)
        primary.update(record.primary)
    means = {
        task: mean_std_tables([{task: r.metrics[task]} for r in group.records])[0][task]
        for task, group in by_task.items()
    }
    report = {
        "split": split,
        "runs": [_row_entry(row, means, higher_is_better, primary) for row in rows],
        "baselines": {task: _baseline_entry(task, group) for task, group in by_task.items()},
        "higher_is_better": higher_is_better,
        "units": units,
        "primary": primary,
        "labels": short_labels(
            [
                *(row.name for row in rows),
                *(record.name for row in rows for record in row.records),
                *(record.name for record in baselines),
            ]
        ),
    }
    if has_seeds(report):
        report["within_spread"] = within_spread_lines(report)
    return report


def _check_unique_names(rows: Sequence[SeedGroup]) -> None:
    names = [row.name for row in rows]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(f"two rows of the report are named {repeated[0]!r}")


def has_seeds(report: Report) -> bool:
    """Whether any row or baseline of ``report`` holds several seeds."""
    entries = [*report["runs"], *report["baselines"].values()]
    return any(entry.get("n", 1) > 1 for entry in entries)


def _baseline_entry(task: str, group: SeedGroup) -> dict[str, Any]:
    """One run: name, folder, step, metrics; several seeds: their mean, std and list."""
    if len(group.records) == 1:
        record = group.records[0]
        return {
            "name": record.name,
            "run_dir": str(record.path),
            "step": record.step,
            "metrics": record.metrics[task],
        }
    means, stds = mean_std_tables([{task: record.metrics[task]} for record in group.records])
    return {
        "name": group.name,
        **_seed_fields(group),
        "metrics": means[task],
        "metrics_std": stds.get(task, {}),
    }


def _seed_fields(group: SeedGroup) -> dict[str, Any]:
    return {
        "n": len(group.records),
        "seeds": group.seeds,
        "run_dirs": [str(record.path) for record in group.records],
        "steps": [record.step for record in group.records],
    }


def _row_entry(
    row: SeedGroup,
    baselines: dict[str, dict[str, float]],
    higher_is_better: dict[str, dict[str, bool]],
    primary: dict[str, str],
) -> dict[str, Any]:
    """A single run's entry, or the mean ± std of the per-seed entries of a group."""
    if len(row.records) == 1:
        record = replace(row.records[0], name=row.name)
        return _run_entry(record, baselines, higher_is_better, primary)
    per_seed = [_run_entry(r, baselines, higher_is_better, primary) for r in row.records]
    metrics, metrics_std = mean_std_tables([entry["metrics"] for entry in per_seed])
    gains, gains_std = mean_std_tables([entry["relative_gain_percent"] for entry in per_seed])
    delta = dict(per_seed[0]["delta_m_percent"])
    for key in ("primary", "all"):
        values = [entry["delta_m_percent"][key] for entry in per_seed]
        mean, std = (None, None) if None in values else mean_std(values)
        delta.update({key: mean, f"{key}_std": std, f"{key}_per_seed": values})
    return {
        "name": row.name,
        **_seed_fields(row),
        "architecture": per_seed[0]["architecture"],
        "tasks": per_seed[0]["tasks"],
        "metrics": metrics,
        "metrics_std": metrics_std,
        "relative_gain_percent": gains,
        "relative_gain_percent_std": gains_std,
        "delta_m_percent": delta,
    }


def _run_entry(
    record: RunRecord,
    baseline_metrics: dict[str, dict[str, float]],
    higher_is_better: dict[str, dict[str, bool]],
    primary: dict[str, str],
) -> dict[str, Any]:
    compared = [task for task in record.metrics if task in baseline_metrics]
    baselines = {task: baseline_metrics[task] for task in compared}
    # A zero baseline (e.g. delta1 = 0 of an untrained network) has no relative gain: it is
    # left out of "all metrics" and named; a zero primary baseline leaves the task out.
    zero = {
        task: [name for name, value in baselines[task].items() if value == 0] for task in compared
    }
    usable = {
        task: {n: v for n, v in record.metrics[task].items() if n not in zero[task]}
        for task in compared
    }
    primary_tasks = [task for task in compared if primary.get(task) not in zero[task]]
    try:
        deltas = {
            "primary": delta_m(
                {task: usable[task] for task in primary_tasks}, baselines, higher_is_better, primary
            )
            if primary_tasks
            else None,
            "all": delta_m(usable, baselines, higher_is_better) if compared else None,
        }
        gains = {
            task: {
                name: 100.0
                * relative_gain(value, baselines[task][name], higher_is_better[task][name])
                for name, value in values.items()
            }
            for task, values in usable.items()
        }
    except (ValueError, KeyError) as error:
        raise DataError(f"run {record.path}: cannot compare with its baselines: {error}") from None
    return {
        "name": record.name,
        "run_dir": str(record.path),
        "architecture": record.architecture,
        "tasks": record.tasks,
        "step": record.step,
        "metrics": record.metrics,
        "relative_gain_percent": gains,
        "delta_m_percent": {
            **deltas,
            "tasks": compared,
            "missing_baselines": [task for task in record.metrics if task not in baselines],
            "zero_baselines": {task: names for task, names in zero.items() if names},
        },
    }


def comparison_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and rows of strings: one row per (task, metric), then the two Δm rows.

    Metric names carry ``*`` for the task's primary metric, ↑ / ↓ and their unit in
    brackets (``rmse* ↓ [m]``; none for a ratio or a run written before units); a run's cell holds
    the value and, where the task has a baseline, the sign-corrected relative gain. A row of
    several seeds shows ``mean ± std``, ``(n=…)`` in its header, and ``≈`` where it is within
    the seeds' spread of the best row (:func:`close_to_best`).
    """
    runs = report["runs"]
    labels = report.get("labels", {})
    header = ["task", "metric", _baseline_header(report)]
    header += [_run_header(run, labels.get(run["name"], run["name"])) for run in runs]
    rows = []
    for task, metric_names in _task_metric_order(report).items():
        for name in metric_names:
            higher = report["higher_is_better"].get(task, {}).get(name, True)
            star = "*" if report["primary"].get(task) == name else ""
            unit = report.get("units", {}).get(task, {}).get(name)
            label = f"{name}{star} {'↑' if higher else '↓'}" + (f" [{unit}]" if unit else "")
            baseline = report["baselines"].get(task, {})
            row = [task, label, _cell(*_flat(baseline, name))]
            spreads = [_metric_spread(run, task, name) for run in runs]
            close = close_to_best(spreads, higher)
            for index, run in enumerate(runs):
                gain = run["relative_gain_percent"].get(task, {}).get(name)
                cell = _cell(*spreads[index]) + ("" if _missing(gain) else f" ({gain:+.2f}%)")
                row.append(cell + (" ≈" if index in close else ""))
            rows.append(row)
    for key, label in (("primary", "primary metric*"), ("all", "all metrics")):
        spreads = [_delta_spread(run, key) for run in runs]
        close = close_to_best(spreads, True)
        cells = [
            _signed_cell(*spread) + (" ≈" if index in close else "")
            for index, spread in enumerate(spreads)
        ]
        rows.append(["Δm %", label, "0", *cells])
    return header, rows


def within_spread_lines(report: Report) -> list[dict[str, Any]]:
    """Per table line where two or more rows have seeds: the pairs within each other's spread.

    ``[{"task": "semseg", "metric": "miou", "pairs": [["a", "b"]]}, ...]``; the Δm lines are
    ``{"task": "delta_m_percent", "metric": "primary" | "all", ...}``. An empty ``pairs``
    says every compared pair is separated by more than its seeds' spread.
    """
    names = [run["name"] for run in report["runs"]]
    lines = [
        (task, name, [_metric_spread(run, task, name) for run in report["runs"]])
        for task, metric_names in _task_metric_order(report).items()
        for name in metric_names
    ]
    lines += [
        ("delta_m_percent", key, [_delta_spread(run, key) for run in report["runs"]])
        for key in ("primary", "all")
    ]
    found = []
    for task, metric, spreads in lines:
        pairs = pairs_within_spread(names, spreads)
        if pairs is not None:
            found.append({"task": task, "metric": metric, "pairs": pairs})
    return found


def _metric_spread(run: dict[str, Any], task: str, name: str) -> Spread:
    mean = run["metrics"].get(task, {}).get(name)
    return mean, run.get("metrics_std", {}).get(task, {}).get(name)


def _delta_spread(run: dict[str, Any], key: str) -> Spread:
    return run["delta_m_percent"][key], run["delta_m_percent"].get(f"{key}_std")


def _flat(baseline: dict[str, Any], name: str) -> Spread:
    """A baseline's ``(mean, std)`` of metric ``name`` (its metrics are not keyed by task)."""
    return baseline.get("metrics", {}).get(name), baseline.get("metrics_std", {}).get(name)


def _run_header(run: dict[str, Any], label: str) -> str:
    return f"{label} (n={run['n']})" if run.get("n", 1) > 1 else label


def _baseline_header(report: Report) -> str:
    """``single-task``, with ``(n=…)`` (or the range of n) when a baseline has seeds."""
    counts = sorted({entry.get("n", 1) for entry in report["baselines"].values()})
    if not counts or counts == [1]:
        return "single-task"
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"single-task (n={n})"


def delta_notes(report: Report) -> list[str]:
    """One sentence per run and reason a task or metric is left out of Δm."""
    notes = []
    for run in report["runs"]:
        delta = run["delta_m_percent"]
        if delta["missing_baselines"]:
            notes.append(
                f"{run['name']}: no baseline for {', '.join(delta['missing_baselines'])} "
                "(left out of Δm)."
            )
        for task, names in delta["zero_baselines"].items():
            notes.append(
                f"{run['name']}: baseline {task} {', '.join(names)} is 0, so its relative gain "
                "is undefined (left out of Δm)."
            )
    return notes


def _task_metric_order(report: Report) -> dict[str, list[str]]:
    """Tasks in order of first appearance (runs, then baselines) with their metric names."""
    order: dict[str, list[str]] = {}
    tables = [run["metrics"] for run in report["runs"]]
    tables += [{task: entry["metrics"]} for task, entry in report["baselines"].items()]
    for table in tables:
        for task, values in table.items():
            names = order.setdefault(task, [])
            names.extend(name for name in values if name not in names)
    return order


def _missing(value: float | None) -> bool:
    """No number to show: absent, or NaN (a metric the run could not measure)."""
    return value is None or math.isnan(value)


def _number(value: float | None) -> str:
    return "—" if _missing(value) else f"{value:.4g}"


def _cell(mean: float | None, std: float | None) -> str:
    """``0.55`` for one run, ``0.55 ± 0.012`` for several seeds."""
    if _missing(mean) or _missing(std):
        return _number(mean)
    return f"{mean:.4g} ± {std:.2g}"


def _signed_cell(mean: float | None, std: float | None) -> str:
    """Δm: ``+10.00`` for one run, ``+10.00 ± 1.20`` for several seeds."""
    if _missing(mean):
        return "—"
    return f"{mean:+.2f}" + ("" if _missing(std) else f" ± {std:.2f}")


def format_text_table(report: Report) -> str:
    """The comparison table as aligned plain text for the terminal, with the rows of
    ``report.md`` and a short footer that explains it (:data:`TEXT_FOOTER`, the seeds line
    when there are seeds, run labels and why a task is left out of Δm)."""
    header, rows = comparison_table(report)
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines += ["", *TEXT_FOOTER, *([TEXT_SEEDS_LINE] if has_seeds(report) else [])]
    footnotes = label_footnotes(report.get("labels", {}))
    if footnotes:
        lines += ["", "Run labels:", *(f"  {line}" for line in footnotes)]
    lines += delta_notes(report)
    return "\n".join(line.rstrip() for line in lines)


def format_markdown_table(report: Report) -> str:
    """The comparison table as a GitHub Markdown table."""
    header, rows = comparison_table(report)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


TEXT_FOOTER = (
    "* primary metric, ↑/↓ higher/lower is better, [unit]; (+x%) gain over the single-task "
    "value, signed: + is better",
    "Δm %: mean gain over the tasks, of the primary metrics* (the papers' Δm) or of all metrics "
    "(per task first)",
)
"""The terminal table's two-line legend (:data:`TABLE_LEGEND` said short): the gains are
sign-corrected, so a smaller RMSE shows as a positive gain."""

TEXT_SEEDS_LINE = "n > 1: mean ± std over the seeds; ≈ within the seeds' spread of the best row"

TABLE_LEGEND = (
    "↑ higher is better, ↓ lower is better, * the task's primary metric, [unit] the metric's "
    "unit (none for a ratio). In parentheses after a value: the relative gain over the "
    "single-task baseline in %, sign-corrected so that positive is better. "
    "Δm = 1/n Σ_i (−1)^{g_i} (m_i − b_i) / b_i over the tasks with a baseline "
    "(Lopes, Vu & de Charette, WACV 2023; Popovic et al., CVPR 2021); 'all metrics' averages "
    "every metric within a task first."
)

SEEDS_LEGEND = (
    "Seeds: a row with n > 1 shows mean ± sample standard deviation (n − 1) over its n runs, "
    "which differ only by their seed (checked). Relative gains and Δm are computed per seed "
    "against the mean of the baseline's seeds, then averaged: with the same metrics in every "
    "seed this mean equals Δm of the mean metrics (the papers' way, Δm being linear in the "
    "metrics for a fixed baseline), and ± is the spread of the per-seed Δm (the baseline's "
    "own spread is in its column, not in Δm's). ≈ marks a row whose mean on that line is "
    "within the seeds' spread of the best row's mean, |mean − mean_best| ≤ std + std_best: "
    "the two differ by no more than the seeds alone do. Only rows with n > 1 are compared."
)


def table_notes(report: Report) -> list[str]:
    """The legend (with the seeds legend when a row or baseline has seeds) and Δm notes."""
    legends = [TABLE_LEGEND, SEEDS_LEGEND] if has_seeds(report) else [TABLE_LEGEND]
    footnotes = label_footnotes(report.get("labels", {}))
    labels = ["Run labels: " + "; ".join(footnotes) + "."] if footnotes else []
    return [*legends, *labels, *delta_notes(report)]


def write_report(
    run_dirs: Sequence[Path],
    baseline_dirs: Sequence[Path],
    out_dir: Path,
    split: str = "test",
    groups: Mapping[str, Sequence[Path]] | None = None,
) -> Report:
    """Write ``report.json``, ``report.md`` (+ ``plots/``, ``samples/``) and ``report.html``.

    ``run_dirs`` are one row each; ``groups`` (row name -> the seeds' run directories) are
    rows of several seeds, after them. Baselines of one task given several times are seeds.
    """
    singles = load_records(run_dirs, split)
    seeded = [load_group(name, dirs, split) for name, dirs in (groups or {}).items()]
    baselines = load_records(baseline_dirs, split)
    report = build_report([*singles, *seeded], baselines, split)
    runs = [*singles, *(record for group in seeded for record in group.records)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    figures = report_figures(
        [*runs, *baselines], report["primary"], report["higher_is_better"], report["labels"]
    )
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    for figure in figures:
        write_bytes(plots_dir / f"{figure.slug}.png", figure.png)
    samples = copy_samples([*runs, *baselines], out_dir / "samples")
    write_text(out_dir / "report.md", _markdown(report, figures, samples, out_dir))
    write_text(
        out_dir / "report.html",
        render_html(
            report,
            run_summary(report, str),
            comparison_table(report),
            table_notes(report),
            figures,
            samples,
        ),
    )
    return report


def _steps(entry: dict[str, Any]) -> str:
    """``step 30`` for one run; ``n=3, seeds 0, 1, 2, steps 30, 30, 28`` for seeds."""
    if "n" not in entry:
        return f"step {entry['step']}"
    seeds = ", ".join(str(seed) for seed in entry["seeds"])
    steps = ", ".join(str(step) for step in entry["steps"])
    return f"n={entry['n']}, seeds {seeds}, steps {steps}"


def run_summary(report: Report, code: Callable[[str], str] = lambda name: f"`{name}`") -> str:
    """``Split: `test`. Runs: `mtl` (hard_sharing, step 500). Single-task baselines: ...``:
    what the table compares, each run name passed through ``code``."""
    runs = ", ".join(
        f"{code(run['name'])} ({run['architecture'] or '?'}, {_steps(run)})"
        for run in report["runs"]
    )
    baselines = ", ".join(
        f"{task}: {code(entry['name'])}" + (f" ({_steps(entry)})" if "n" in entry else "")
        for task, entry in report["baselines"].items()
    )
    return (
        f"Split: {code(report['split'])}. Runs: {runs}. "
        f"Single-task baselines: {baselines or 'none'}."
    )


def _markdown(
    report: Report, figures: Sequence[Figure], samples: dict[str, SampleSet], out_dir: Path
) -> str:
    lines = ["# densetasks report", "", run_summary(report), "", format_markdown_table(report)]
    lines += [f"\n{note}" for note in table_notes(report)]
    for figure in figures:
        lines += ["", f"## {figure.title}", "", f"![{figure.title}](plots/{figure.slug}.png)"]
    if samples:
        lines += ["", "## Sample predictions"]
        for name, sample_set in samples.items():
            lines += ["", f"### {report['labels'].get(name, name)}", ""]
            lines += markdown_samples(sample_set, out_dir)
    return "\n".join(lines) + "\n"
