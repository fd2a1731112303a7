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
"""

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from densetasks.errors import DataError
from densetasks.experiments.report_html import render_html
from densetasks.experiments.report_plots import Figure, report_figures
from densetasks.experiments.run_record import RunRecord, load_run_record
from densetasks.metrics.delta_m import delta_m, relative_gain

Report = dict[str, Any]
"""``{"split", "runs": [...], "baselines": {task: ...}, "higher_is_better", "primary"}``."""


def load_records(run_dirs: Sequence[Path], split: str) -> list[RunRecord]:
    """Records of ``run_dirs`` named by folder name (by the path as given where names clash)."""
    names = [Path(run_dir).name for run_dir in run_dirs]
    return [
        load_run_record(Path(run_dir), split, name if names.count(name) == 1 else str(run_dir))
        for run_dir, name in zip(run_dirs, names, strict=True)
    ]


def match_baselines(baselines: Sequence[RunRecord]) -> dict[str, RunRecord]:
    """Task name -> the single-task run that trained only that task."""
    by_task: dict[str, RunRecord] = {}
    for record in baselines:
        if len(record.tasks) != 1:
            raise DataError(
                f"baseline run {record.path} trained {len(record.tasks)} tasks "
                f"({', '.join(record.tasks)}); a baseline must train exactly one"
            )
        task = record.tasks[0]
        if task in by_task:
            raise DataError(
                f"two baselines for task {task!r}: {by_task[task].path} and {record.path}"
            )
        by_task[task] = record
    return by_task


def build_report(runs: Sequence[RunRecord], baselines: Sequence[RunRecord], split: str) -> Report:
    """Every number of the report as plain data (what ``report.json`` holds)."""
    if not runs:
        raise ValueError("a report needs at least one run")
    by_task = match_baselines(baselines)
    higher_is_better: dict[str, dict[str, bool]] = {}
    primary: dict[str, str] = {}
    for record in [*baselines, *runs]:
        for task, directions in record.higher_is_better.items():
            higher_is_better.setdefault(task, {}).update(directions)
        primary.update(record.primary)
    return {
        "split": split,
        "runs": [_run_entry(record, by_task, higher_is_better, primary) for record in runs],
        "baselines": {
            task: {
                "name": record.name,
                "run_dir": str(record.path),
                "step": record.step,
                "metrics": record.metrics[task],
            }
            for task, record in by_task.items()
        },
        "higher_is_better": higher_is_better,
        "primary": primary,
    }


def _run_entry(
    record: RunRecord,
    by_task: dict[str, RunRecord],
    higher_is_better: dict[str, dict[str, bool]],
    primary: dict[str, str],
) -> dict[str, Any]:
    compared = [task for task in record.metrics if task in by_task]
    baselines = {task: by_task[task].metrics[task] for task in compared}
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
            "missing_baselines": [task for task in record.metrics if task not in by_task],
            "zero_baselines": {task: names for task, names in zero.items() if names},
        },
    }


def comparison_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and rows of strings: one row per (task, metric), then the two Δm rows.

    Metric names carry ↑ / ↓ and a ``*`` for the task's primary metric; a run's cell holds
    the value and, where the task has a baseline, the sign-corrected relative gain.
    """
    runs = report["runs"]
    header = ["task", "metric", "single-task", *[run["name"] for run in runs]]
    rows = []
    for task, metric_names in _task_metric_order(report).items():
        for name in metric_names:
            arrow = "↑" if report["higher_is_better"].get(task, {}).get(name, True) else "↓"
            star = "*" if report["primary"].get(task) == name else ""
            baseline = report["baselines"].get(task, {}).get("metrics", {}).get(name)
            row = [task, f"{name}{star} {arrow}", _number(baseline)]
            for run in runs:
                value = run["metrics"].get(task, {}).get(name)
                gain = run["relative_gain_percent"].get(task, {}).get(name)
                row.append(_number(value) + ("" if _missing(gain) else f" ({gain:+.2f}%)"))
            rows.append(row)
    for key, label in (("primary", "primary metric*"), ("all", "all metrics")):
        rows.append(["Δm %", label, "0"] + [_signed(run["delta_m_percent"][key]) for run in runs])
    return header, rows


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


def _signed(value: float | None) -> str:
    return "—" if _missing(value) else f"{value:+.2f}"


def format_text_table(report: Report) -> str:
    """The comparison table as aligned plain text, for the terminal."""
    header, rows = comparison_table(report)
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def format_markdown_table(report: Report) -> str:
    """The comparison table as a GitHub Markdown table."""
    header, rows = comparison_table(report)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


TABLE_LEGEND = (
    "↑ higher is better, ↓ lower is better, * the task's primary metric. In brackets: the "
    "relative gain over the single-task baseline in %, sign-corrected so that positive is "
    "better. Δm = 1/n Σ_i (−1)^{g_i} (m_i − b_i) / b_i over the tasks with a baseline "
    "(Lopes, Vu & de Charette, WACV 2023; Popovic et al., CVPR 2021); 'all metrics' averages "
    "every metric within a task first."
)


def write_report(
    run_dirs: Sequence[Path],
    baseline_dirs: Sequence[Path],
    out_dir: Path,
    split: str = "test",
) -> Report:
    """Write ``report.json``, ``report.md`` (+ ``plots/``, ``samples/``) and ``report.html``."""
    runs = load_records(run_dirs, split)
    baselines = load_records(baseline_dirs, split)
    report = build_report(runs, baselines, split)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    figures = report_figures([*runs, *baselines], report["primary"], report["higher_is_better"])
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    for figure in figures:
        (plots_dir / f"{figure.slug}.png").write_bytes(figure.png)
    samples = _copy_samples([*runs, *baselines], out_dir / "samples")
    (out_dir / "report.md").write_text(_markdown(report, figures, samples, out_dir))
    (out_dir / "report.html").write_text(
        render_html(
            report, comparison_table(report), [TABLE_LEGEND, *delta_notes(report)], figures, samples
        )
    )
    return report


def _copy_samples(records: Sequence[RunRecord], samples_dir: Path) -> dict[str, list[Path]]:
    """Copy each run's latest sample pictures to ``samples/<run>/``; run name -> copies."""
    copies: dict[str, list[Path]] = {}
    for record in records:
        if not record.sample_images:
            continue
        target = samples_dir / _safe_name(record.name)
        target.mkdir(parents=True, exist_ok=True)
        copies[record.name] = [
            Path(shutil.copyfile(image, target / image.name)) for image in record.sample_images
        ]
    return copies


def _safe_name(name: str) -> str:
    return "".join(char if char.isalnum() or char in "-_." else "_" for char in name)


def _markdown(
    report: Report, figures: Sequence[Figure], samples: dict[str, list[Path]], out_dir: Path
) -> str:
    lines = [
        "# densetasks report",
        "",
        f"Split: `{report['split']}`. Runs: "
        + ", ".join(
            f"`{run['name']}` ({run['architecture'] or '?'}, step {run['step']})"
            for run in report["runs"]
        )
        + ". Single-task baselines: "
        + (
            ", ".join(f"{task}: `{entry['name']}`" for task, entry in report["baselines"].items())
            or "none"
        )
        + ".",
        "",
        format_markdown_table(report),
        "",
        TABLE_LEGEND,
    ]
    lines += [f"\n{note}" for note in delta_notes(report)]
    for figure in figures:
        lines += ["", f"## {figure.title}", "", f"![{figure.title}](plots/{figure.slug}.png)"]
    if samples:
        lines += ["", "## Sample predictions"]
        for name, images in samples.items():
            lines += ["", f"### {name}", ""]
            lines += [
                f"![{image.stem}]({image.relative_to(out_dir).as_posix()})" for image in images
            ]
    return "\n".join(lines) + "\n"
