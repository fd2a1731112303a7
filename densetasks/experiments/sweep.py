"""Sweeps: train one run per combination of config values, then compare them.

Kendall, Gal & Cipolla (CVPR 2018, Sec. 3 and Fig. 2) show that a multi-task network trained with a
weighted sum of losses ``Σ_i w_i L_i`` (their eq. 1) is highly sensitive to the weights ``w_i``:
at some weighting both tasks beat their single-task models, nearby weightings lose on one task.
A sweep reproduces that curve for any dotted config key (loss weights, learning rates, ...):

1. :func:`parse_grid` / :func:`expand_grid` turn ``--grid key=v1,v2`` options into the
   Cartesian product of overrides; :func:`add_seed_axis` adds the run config's ``seed`` as
   the last (fastest) key, so every setting is trained once per seed (mean ± std over seeds
   is then ``densetasks report --group``);
2. :func:`plan_runs` validates every resulting config before anything trains;
3. :func:`run_sweep` trains the runs through a backend (:func:`train_locally`: one after
   another or in parallel processes; :mod:`~densetasks.experiments.sweep_ray`: one Ray task
   per run), resuming a run that was interrupted and skipping one that already finished;
4. :func:`collect_results` reads each run's metrics, :func:`pareto_front` marks the
   non-dominated runs, :func:`write_sweep` writes ``sweep.json``, ``sweep.md`` and, given a
   renderer such as :func:`densetasks.experiments.sweep_plots.sweep_figure_png`, ``sweep.png``.

This module draws nothing and never imports :mod:`~densetasks.experiments.sweep_plots` (which
imports this module's data types): the caller wires the two, as ``densetasks sweep`` does.

Sweep directory layout::

    DIR/runs/<key1=v1,key2=v2>/     one ordinary run directory per combination
    DIR/runs/<key1=v1,seed=0>/      ... ending in the seed when the sweep has a seed axis
    DIR/sweep.json                  every combination: overrides, metrics, primary, Pareto flag
    DIR/sweep.md                    one row per combination (and per --mark run)
    DIR/sweep.png                   primary metrics against the setting; pairwise Pareto scatters
"""

import functools
import itertools
import json
import multiprocessing
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from densetasks.engine.build import build_tasks, open_dataset
from densetasks.engine.config import RunConfig, apply_overrides, validate_config
from densetasks.engine.run import evaluate_run, train
from densetasks.errors import ConfigError, DataError, TrainingError
from densetasks.experiments.run_record import load_run_record

Grid = dict[str, list[Any]]
"""Dotted config key -> the values it takes, in the order given."""


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its name, the overrides that make it, its validated config."""

    name: str
    overrides: dict[str, Any]
    config: RunConfig
    run_dir: Path


@dataclass(frozen=True)
class SweepEntry:
    """The results of one run, as the sweep table and plots show it."""

    name: str
    run_dir: Path
    overrides: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    marked: bool = False
    pareto: bool = False


@dataclass
class SweepResult:
    """Every entry plus what the comparison needs: primary metric and direction per task."""

    split: str
    keys: list[str]
    entries: list[SweepEntry]
    primary: dict[str, str]
    higher_is_better: dict[str, dict[str, bool]] = field(default_factory=dict)

    def primary_points(self) -> list[dict[str, float]]:
        """``{task: primary metric value}`` per entry, the points of the Pareto front."""
        return [
            {task: entry.metrics[task][name] for task, name in self.primary.items()}
            for entry in self.entries
        ]

    def primary_directions(self) -> dict[str, bool]:
        """``{task: higher_is_better of its primary metric}``."""
        return {task: self.higher_is_better[task][name] for task, name in self.primary.items()}


def parse_grid(items: Sequence[str]) -> Grid:
    """``["train.lr=1e-3,1e-2"]`` -> ``{"train.lr": [0.001, 0.01]}``; values are YAML scalars.

    A key given twice, a missing ``=`` or an empty value is a :class:`ConfigError` naming it.
    """
    grid: Grid = {}
    for item in items:
        key, separator, text = item.partition("=")
        key = key.strip()
        if not separator or not key:
            raise ConfigError(f"--grid {item!r} is not of the form key.path=v1,v2,...")
        if key in grid:
            raise ConfigError(f"--grid {key}: the key is given twice")
        texts = [part.strip() for part in text.split(",")]
        if any(not part for part in texts):
            raise ConfigError(f"--grid {key}: empty value in {text!r}")
        grid[key] = [_yaml_scalar(key, part) for part in texts]
    return grid


def _yaml_scalar(key: str, text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"--grid {key}: value {text!r} is not YAML: {error}") from None
    if isinstance(value, (dict, list)):
        raise ConfigError(f"--grid {key}: value {text!r} is not a scalar")
    return value


def expand_grid(grid: Grid) -> list[dict[str, Any]]:
    """The Cartesian product of ``grid``, the last key varying fastest; ``{}`` gives ``[{}]``."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def add_seed_axis(grid: Grid, seeds: Sequence[int]) -> Grid:
    """``grid`` with the top-level config key ``seed`` taking ``seeds``, as its last key.

    Last, so it varies fastest: the seeds of one setting are neighbours and every run folder
    name ends in ``seed=<n>``. A seed given twice, or ``seed`` already in the grid, is a
    :class:`ConfigError`.
    """
    if not seeds:
        return dict(grid)
    if "seed" in grid:
        raise ConfigError("--seeds and --grid seed=... both give the seeds: use one")
    repeated = sorted({seed for seed in seeds if list(seeds).count(seed) > 1})
    if repeated:
        raise ConfigError(f"--seeds: seed {repeated[0]} is given twice")
    return {**grid, "seed": list(seeds)}


def combination_name(overrides: Mapping[str, Any]) -> str:
    """A file-system safe folder name: ``key1=v1,key2=v2`` (other characters become ``_``)."""
    if not overrides:
        return "base"
    text = ",".join(f"{key}={format_value(value)}" for key, value in overrides.items())
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)


def format_value(value: Any) -> str:
    """YAML spelling of a scalar (``true``, ``null``, ``0.01``) so names read like the grid."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def plan_runs(
    base: Mapping[str, Any], named_overrides: Mapping[str, Mapping[str, Any]], runs_dir: Path
) -> list[PlannedRun]:
    """Apply each run's overrides to the raw ``base`` config and validate all of them first.

    A bad key or value in any combination — including a task option, which only the task
    itself can check (its tasks are built against the run's training dataset) — raises
    :class:`ConfigError` naming the run and the key before anything trains.
    """
    planned = []
    for name, overrides in named_overrides.items():
        if not name or name in {".", ".."} or "/" in name:
            raise ValueError(f"run name {name!r} is not a folder name")
        raw = apply_overrides(dict(base), dict(overrides))
        config = validate_config(raw, source=f"sweep run {name}")
        try:
            build_tasks(config, open_dataset(config, config.data.train_split))
        except ConfigError as error:
            raise ConfigError(f"sweep run {name}: {error}") from None
        planned.append(PlannedRun(name, dict(overrides), config, Path(runs_dir) / name))
    return planned


def plan_grid(base: Mapping[str, Any], grid: Grid, runs_dir: Path) -> list[PlannedRun]:
    """:func:`plan_runs` over :func:`expand_grid`, each run named by :func:`combination_name`."""
    combinations = expand_grid(grid)
    named = {combination_name(overrides): overrides for overrides in combinations}
    if len(named) != len(combinations):
        raise ConfigError(f"--grid values give clashing run names: {list(named)}")
    return plan_runs(base, named, runs_dir)


def is_finished(run_dir: Path) -> bool:
    """A run is finished once training wrote its best checkpoint's validation metrics."""
    return (Path(run_dir) / "metrics_val.json").is_file()


Backend = Callable[[Sequence[PlannedRun], Callable[[str], None]], dict[str, Exception]]
"""Trains the given runs, logging through the callable; returns ``{name: error}`` of the runs
that failed (the others finished). :func:`train_locally` is the default; the Ray backend is
:func:`densetasks.experiments.sweep_ray.ray_backend`."""


def train_named_run(planned: Sequence[PlannedRun], name: str, missing: str) -> Path:
    """Train the run of ``planned`` named ``name`` alone, evaluated on the test split, and
    return its folder: what a benchmark's ``--verify`` retrains. ``missing`` is the one-line
    message to exit with when the plan holds no such run (other options than the committed
    ones)."""
    chosen = [run for run in planned if run.name == name]
    if not chosen:
        raise SystemExit(missing)
    run_sweep(chosen, jobs=1, split="test")
    return chosen[0].run_dir


def run_sweep(
    planned: Sequence[PlannedRun],
    jobs: int = 1,
    split: str = "val",
    log: Callable[[str], None] = print,
    backend: Backend | None = None,
) -> list[str]:
    """Train every unfinished run (resuming an interrupted one); returns the names trained.

    ``backend`` trains them (default: :func:`train_locally` with ``jobs`` processes; ``jobs``
    is for that backend only). A failed run does not stop the others; once all are done a
    :class:`TrainingError` names every failed run and its error, so re-running the command
    retries just those. Afterwards each run's best checkpoint has ``metrics_<split>.json``
    (evaluated here if missing).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if backend is None:
        backend = functools.partial(train_locally, jobs=jobs)
    elif jobs != 1:
        raise ValueError("jobs is for the local backend; give the backend its own resources")
    todo = pending_runs(planned, log)
    failures = backend(todo, log) if todo else {}
    if failures:
        first = next(iter(failures.values()))
        raise TrainingError(_failure_message(failures, len(todo))) from first
    for run in planned:
        if not (run.run_dir / f"metrics_{split}.json").is_file():
            evaluate_run(run.run_dir, split)
    return [run.name for run in todo]


def pending_runs(planned: Sequence[PlannedRun], log: Callable[[str], None]) -> list[PlannedRun]:
    """The runs not finished yet (see :func:`is_finished`); logs each one skipped."""
    todo = []
    for run in planned:
        if is_finished(run.run_dir):
            log(f"sweep: {run.name} already finished, skipped")
        else:
            todo.append(run)
    return todo


def train_locally(
    todo: Sequence[PlannedRun], log: Callable[[str], None], jobs: int = 1
) -> dict[str, Exception]:
    """The local :data:`Backend`: one run after another, or ``jobs`` at once in processes.

    Parallel runs are spawned processes, each with ``cpu_count // jobs`` torch threads, so
    they do not oversubscribe the cores.
    """
    if jobs == 1 or len(todo) <= 1:
        failures: dict[str, Exception] = {}
        for run in todo:
            log(f"sweep: training {run.name}")
            call = functools.partial(train_one, run.config.to_dict(), str(run.run_dir), None)
            failures |= gather_outcomes({run.name: call}, log)
        return failures
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, max_tasks_per_child=1) as pool:
        futures = {
            run.name: pool.submit(train_one, run.config.to_dict(), str(run.run_dir), threads)
            for run in todo
        }
        return gather_outcomes({name: future.result for name, future in futures.items()}, log)


def gather_outcomes(
    waits: Mapping[str, Callable[[], object]], log: Callable[[str], None]
) -> dict[str, Exception]:
    """Wait for each run in turn, log it finished or failed; returns ``{name: error}``.

    Every backend reports through here, so a failure reads the same whichever trained it.
    """
    failures = {}
    for name, wait in waits.items():
        try:
            wait()
        except Exception as error:
            failures[name] = error
            log(f"sweep: {name} failed: {_describe(error)}")
        else:
            log(f"sweep: {name} finished")
    return failures


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def _failure_message(failures: Mapping[str, Exception], total: int) -> str:
    runs = "; ".join(f"{name} ({_describe(error)})" for name, error in failures.items())
    return (
        f"{len(failures)} of {total} sweep runs failed: {runs}. The others finished; "
        "running the same command again retries only the failed runs"
    )


def train_one(config: dict[str, Any], run_dir: str, threads: int | None) -> None:
    """Train (or resume from ``last.pt``) one run: what every backend runs per planned run.

    Module level and given plain data, so spawned processes and Ray workers import and call
    it by name. ``threads`` caps torch's threads (``None``: leave torch's default).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    resume = (Path(run_dir) / "checkpoints" / "last.pt").is_file()
    train(validate_config(config, source=run_dir), run_dir, resume=resume)


def collect_results(
    planned: Sequence[PlannedRun],
    split: str = "val",
    marked: Sequence[Path] = (),
    keys: Sequence[str] | None = None,
) -> SweepResult:
    """Read every planned run's and every ``marked`` run's metrics; flag the Pareto front.

    ``keys`` are the varied config keys shown as columns (default: every key any run
    overrides). The front is over each task's primary metric, marked runs included, so the
    table shows whether e.g. uncertainty weighting lies on the front of the fixed weightings.
    Tasks that not every entry reports are left out of the comparison.
    """
    records = [load_run_record(run.run_dir, split, run.name) for run in planned]
    records += [load_run_record(Path(path), split) for path in marked]
    if not records:
        raise ValueError("a sweep result needs at least one run")
    overrides = [run.overrides for run in planned] + [{} for _ in marked]
    common = [task for task in records[0].primary if all(task in r.metrics for r in records)]
    if not common:
        raise DataError(f"the runs of the sweep share no task: {[r.name for r in records]}")
    primary = {task: records[0].primary[task] for task in common}
    higher_is_better: dict[str, dict[str, bool]] = {}
    for record in records:
        for task in common:
            higher_is_better.setdefault(task, {}).update(record.higher_is_better[task])
    entries = [
        SweepEntry(
            name=record.name,
            run_dir=record.path,
            overrides=dict(run_overrides),
            metrics={task: dict(record.metrics[task]) for task in common},
            marked=index >= len(planned),
        )
        for index, (record, run_overrides) in enumerate(zip(records, overrides, strict=True))
    ]
    if keys is None:
        keys = list(dict.fromkeys(key for run in planned for key in run.overrides))
    result = SweepResult(split, list(keys), entries, primary, higher_is_better)
    front = set(pareto_front(result.primary_points(), result.primary_directions()))
    result.entries = [replace(entry, pareto=index in front) for index, entry in enumerate(entries)]
    return result


def pareto_front(points: list[dict[str, float]], higher_is_better: dict[str, bool]) -> list[int]:
    """Indices (ascending) of the points that no other point dominates.

    Point ``b`` dominates ``a`` when ``b`` is at least as good on every key of
    ``higher_is_better`` and strictly better on one. Equal points do not dominate each other,
    so both stay on the front. Raises ``ValueError`` naming a point that lacks a key.
    """
    if not higher_is_better:
        raise ValueError("pareto_front needs at least one objective")
    oriented = []
    for index, point in enumerate(points):
        missing = [key for key in higher_is_better if key not in point]
        if missing:
            raise ValueError(f"point {index} lacks {missing}")
        oriented.append([point[k] if up else -point[k] for k, up in higher_is_better.items()])
    return [
        index
        for index, candidate in enumerate(oriented)
        if not any(_dominates(other, candidate) for other in oriented)
    ]


def _dominates(better: list[float], worse: list[float]) -> bool:
    pairs = list(zip(better, worse, strict=True))
    return all(b >= w for b, w in pairs) and any(b > w for b, w in pairs)


def sweep_payload(result: SweepResult) -> dict[str, Any]:
    """What ``sweep.json`` holds (plain JSON data)."""
    return {
        "split": result.split,
        "keys": result.keys,
        "primary": result.primary,
        "higher_is_better": result.higher_is_better,
        "runs": [
            {
                "name": entry.name,
                "run_dir": str(entry.run_dir),
                "overrides": entry.overrides,
                "metrics": entry.metrics,
                "marked": entry.marked,
                "pareto": entry.pareto,
            }
            for entry in result.entries
        ],
    }


def format_sweep_table(result: SweepResult) -> str:
    """Markdown: one row per run, the swept values, each task's primary metric, Pareto mark."""
    metric_columns = [
        f"{task} {name} {'↑' if result.higher_is_better[task][name] else '↓'}"
        for task, name in result.primary.items()
    ]
    header = ["run", *result.keys, *metric_columns, "Pareto"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in result.entries:
        name = f"{entry.name} (marked)" if entry.marked else entry.name
        values = [
            format_value(entry.overrides[key]) if key in entry.overrides else "—"
            for key in result.keys
        ]
        metrics = [f"{entry.metrics[task][n]:.4g}" for task, n in result.primary.items()]
        cells = [name, *values, *metrics, "✓" if entry.pareto else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_sweep(
    result: SweepResult,
    out_dir: Path,
    render_png: Callable[[SweepResult], bytes] | None = None,
) -> None:
    """Write ``sweep.json`` and ``sweep.md`` into ``out_dir``, and ``sweep.png`` if asked.

    ``render_png`` draws the figure, e.g. ``sweep_plots.sweep_figure_png``; without it no
    picture is written and ``sweep.md`` links none.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sweep.json").write_text(
        json.dumps(sweep_payload(result), indent=2, ensure_ascii=False) + "\n"
    )
    text = [
        "# densetasks sweep",
        "",
        f"Split: `{result.split}`. Swept keys: "
        + (", ".join(f"`{key}`" for key in result.keys) or "none")
        + ". Each task's primary metric; ✓ marks the runs no other run beats on every task "
        "(Pareto front); '(marked)' runs were added with --mark.",
        "",
        format_sweep_table(result),
    ]
    if render_png is not None:
        (out_dir / "sweep.png").write_bytes(render_png(result))
        text += ["", "![primary metrics against the setting and Pareto fronts](sweep.png)"]
    (out_dir / "sweep.md").write_text("\n".join(text) + "\n")
