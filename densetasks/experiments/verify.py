"""``--verify ROW``: retrain one committed row of a benchmark and compare it with its numbers.

A committed table is only as good as the claim that its command gives it. Every benchmark
script takes ``--verify ROW`` (:func:`densetasks.experiments.provenance.add_provenance_options`):
it retrains that one run in a temporary folder, computes the numbers the results file holds
for it, prints both side by side and exits non-zero when one differs by more than the
tolerance. With a :class:`VerifyLog` the outcome is appended, with the provenance of the
process that ran it, to ``verifications.json`` beside the results, so a README can quote
what a rerun gave.

Most benchmarks commit ``densetasks report`` data (``report.json``, or reports inside their
results file). There a row is one run, named by its run folder (``equal,seed=0``):

* a run of a row with several seeds: the report holds its Δm per seed (against the mean of
  the baseline seeds, which the report holds too), so the retrained run's Δm is computed
  against the committed baselines (:func:`committed_numbers`, :func:`rerun_numbers`);
* a single run: its Δm and each task's primary metric;
* a single-run baseline: each task's primary metric.

Baselines of several seeds are kept only as their mean, so a seed of one cannot be checked
alone; a row of a multi-task run checks the same training code.
"""

import json
import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from densetasks.data.io import write_json
from densetasks.errors import DataError
from densetasks.experiments.run_record import load_run_record
from densetasks.metrics.delta_m import delta_m

Numbers = dict[str, float]
DELTA_M = "Δm % (primary)"
VERIFICATIONS = "verifications.json"
"""File beside a benchmark's results: every ``--verify`` outcome, newest last."""


@dataclass(frozen=True)
class Comparison:
    """One committed number beside the same number from the rerun."""

    name: str
    committed: float
    rerun: float

    @property
    def difference(self) -> float:
        return self.rerun - self.committed

    def within(self, tolerance: float) -> bool:
        """Whether the rerun is within ``tolerance`` of the committed number (NaN never)."""
        return abs(self.difference) <= tolerance


def compare(committed: Mapping[str, float], rerun: Mapping[str, float]) -> list[Comparison]:
    """Pair the numbers by name; both sides must name the same numbers."""
    if set(committed) != set(rerun):
        raise DataError(f"the rerun gives {sorted(rerun)} but the results hold {sorted(committed)}")
    return [Comparison(name, committed[name], rerun[name]) for name in committed]


def format_comparison(row: str, comparisons: list[Comparison], tolerance: float) -> str:
    """A Markdown table: committed, rerun, difference and whether it is within tolerance."""
    lines = [
        f"verify {row} (tolerance {tolerance:g})",
        "",
        "| number | committed | rerun | difference | |",
        "|---|---:|---:|---:|---|",
    ]
    for item in comparisons:
        mark = "ok" if item.within(tolerance) else "DIFFERS"
        lines.append(
            f"| {item.name} | {item.committed:.6g} | {item.rerun:.6g} | "
            f"{item.difference:+.3g} | {mark} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class VerifyLog:
    """Where a verification's outcome is appended (a JSON list) and the provenance record of
    the process that ran it (:func:`densetasks.experiments.provenance.start_benchmark`)."""

    path: Path
    provenance: Mapping[str, Any]

    def append(self, row: str, comparisons: list[Comparison], tolerance: float) -> None:
        earlier = json.loads(self.path.read_text()) if self.path.is_file() else []
        entry = {
            "row": row,
            "tolerance": tolerance,
            "reproduced": all(item.within(tolerance) for item in comparisons),
            "numbers": [
                {
                    "name": item.name,
                    "committed": item.committed,
                    "rerun": item.rerun,
                    "difference": item.difference,
                }
                for item in comparisons
            ],
            "provenance": dict(self.provenance),
        }
        write_json(self.path, [*earlier, entry])


def verify_row(
    row: str,
    committed: Mapping[str, float],
    retrain: Callable[[Path], Mapping[str, float]],
    tolerance: float,
    log: VerifyLog | None = None,
) -> int:
    """Retrain ``row`` with ``retrain(folder)`` in a fresh temporary folder, print the
    comparison with ``committed`` (and append it to ``log``) and return the exit status: 0
    when every number is within ``tolerance``, 1 otherwise."""
    if not committed:
        raise DataError(f"row {row!r}: the results hold no number to compare")
    print(f"verify {row}: retraining into a temporary folder", flush=True)
    with tempfile.TemporaryDirectory(prefix="densetasks-verify-") as folder:
        rerun = retrain(Path(folder))
    comparisons = compare(committed, rerun)
    print(format_comparison(row, comparisons, tolerance))
    if log is not None:
        log.append(row, comparisons, tolerance)
    return 0 if all(item.within(tolerance) for item in comparisons) else 1


def committed_numbers(report: Mapping[str, Any], run: str) -> Numbers:
    """The numbers a ``densetasks report`` (as JSON) holds for the run folder named ``run``."""
    kind, key, entry = _locate(report, run)
    if kind == "seed":
        return {DELTA_M: entry["delta_m_percent"]["primary_per_seed"][_folders(entry).index(run)]}
    if kind == "run":
        return {DELTA_M: entry["delta_m_percent"]["primary"], **_primary(report, entry["metrics"])}
    return _primary(report, {key: entry["metrics"]})


def rerun_numbers(report: Mapping[str, Any], run_dir: Path, split: str) -> Numbers:
    """The same numbers as :func:`committed_numbers` for the retrained run at ``run_dir``
    (named as the committed one), its Δm against the committed report's baselines."""
    kind, _, _ = _locate(report, run_dir.name)
    metrics = load_run_record(run_dir, split).metrics
    if kind == "baseline":
        return _primary(report, metrics)
    baselines = {task: entry["metrics"] for task, entry in report["baselines"].items()}
    primary = {task: report["primary"][task] for task in metrics if task in baselines}
    compared = {task: metrics[task] for task in primary}
    delta = delta_m(compared, baselines, report["higher_is_better"], primary)
    return {DELTA_M: delta} if kind == "seed" else {DELTA_M: delta, **_primary(report, metrics)}


def run_names(report: Mapping[str, Any]) -> list[str]:
    """Every run folder name a report's rows and baselines hold."""
    entries = [*report["runs"], *report["baselines"].values()]
    return [name for entry in entries for name in _folders(entry)]


def _locate(report: Mapping[str, Any], run: str) -> tuple[str, str, Mapping[str, Any]]:
    """``("seed" | "run" | "baseline", row name or task, entry)`` of the run folder ``run``."""
    for entry in report["runs"]:
        if run in _folders(entry):
            return ("seed" if "run_dirs" in entry else "run"), entry["name"], entry
    for task, entry in report["baselines"].items():
        if run in _folders(entry):
            if "run_dirs" in entry:
                raise DataError(
                    f"{run} is one seed of the {task} baseline, which the report keeps only as "
                    "the seeds' mean: verify a run of a multi-task row instead"
                )
            return "baseline", task, entry
    raise DataError(f"no run folder {run!r} in the report; it holds {', '.join(run_names(report))}")


def _folders(entry: Mapping[str, Any]) -> list[str]:
    paths = entry.get("run_dirs") or [entry.get("run_dir")]
    return [Path(path).name for path in paths if path]


def _primary(report: Mapping[str, Any], metrics: Mapping[str, Mapping[str, float]]) -> Numbers:
    """``task.metric`` -> value of each task's primary metric (those measured)."""
    values = {}
    for task, task_metrics in metrics.items():
        name = report["primary"].get(task)
        if name is not None and name in task_metrics and not math.isnan(task_metrics[name]):
            values[f"{task}.{name}"] = task_metrics[name]
    return values


def verify_report_run(
    run: str,
    report: Mapping[str, Any],
    retrain: Callable[[Path], Path],
    tolerance: float,
    log: VerifyLog | None = None,
    split: str = "test",
) -> int:
    """:func:`verify_row` for a run of a committed ``densetasks report``: ``retrain(folder)``
    trains the run folder named ``run`` under ``folder`` and returns its path. A run the
    report does not hold exits with a one-line message naming those it holds."""
    try:
        committed = committed_numbers(report, run)
    except DataError as error:
        raise SystemExit(f"error: --verify {run}: {error}") from None
    return verify_row(
        run, committed, lambda folder: rerun_numbers(report, retrain(folder), split), tolerance, log
    )
