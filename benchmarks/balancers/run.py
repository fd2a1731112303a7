"""Every registered balancer head to head, with seeds: Δm against single-task runs, and cost.

One command trains, on each task set (``semseg_depth_normals.yaml``: semseg + depth + normals;
``semseg_instance_depth.yaml``: semseg + instance + depth, Kendall et al.'s set), the same
hard-sharing network for the same steps:

* the single-task baselines (``model.architecture=single_task``), the reference of Δm;
* every registered balancer but ``fixed`` (its weights have no natural value: unset they are
  all 1, which is ``equal``; tuned they are the grid search of ``benchmarks/kendall2018``),

each once per seed (``--seeds``, default 0 1 2), through ``densetasks.experiments.sweep``,
with their defaults except the options counted in steps (DWA's period, STCH's warm-up), which
are scaled to the run's length (:func:`step_scaled_options`).
Every run keeps its best checkpoint on the validation split (``eval.best``); the report
scores it on the test split against the single-task runs (``densetasks report --group``:
mean ± std over the seeds). Finished runs are skipped, so an interrupted benchmark continues.

Then it times one training step (``engine.loop.train_step``: forward, balancer backward,
optimiser step) of every balancer on the same batch and the same network, in interleaved
rounds (the order rotates every round, so drifting machine load hits all alike), and reports
the median per method in ms and relative to ``equal``.

The synthetic scenes of each task set are rendered once into the folder format under
``WORK_DIR/data`` (the same scenes and exact labels; rendering them again in every run would
cost more than the training). Writes, per task set, ``<set>/report.md|html|json`` (every
metric) and, for both, ``results.md`` / ``results.json`` (ranked Δm with the seeds' spread,
cost), ``pareto.png`` (Δm against cost) and ``experiment.json`` (command, sizes, CPU time).
See ``benchmarks/balancers/README.md``.
"""

import argparse
import copy
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from densetasks.balancers import BALANCERS
from densetasks.cli.parsing import add_overrides_option
from densetasks.data import write_folder_dataset
from densetasks.data.registry import SPLITS, create_dataset
from densetasks.engine import build
from densetasks.engine.config import RunConfig, load_config, validate_config
from densetasks.engine.distributed import ProcessInfo
from densetasks.engine.loop import StepParts, train_step
from densetasks.engine.optim import build_optimizer
from densetasks.engine.passes import to_device
from densetasks.experiments.provenance import add_provenance_options, start_benchmark
from densetasks.experiments.report import write_report
from densetasks.experiments.report_seeds import Spread, close_to_best, within_spread
from densetasks.experiments.sweep import (
    PlannedRun,
    pareto_front,
    plan_runs,
    run_sweep,
    train_named_run,
)
from densetasks.experiments.verify import VERIFICATIONS, VerifyLog, verify_report_run
from densetasks.tasks.registry import label_kinds

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TASK_SETS = {
    "semseg_depth_normals": HERE / "semseg_depth_normals.yaml",
    "semseg_instance_depth": HERE / "semseg_instance_depth.yaml",
}
LEFT_OUT = {"fixed": "no natural weights: unset they are all 1 (= equal), tuned see kendall2018"}
QUICK = {  # a smoke test of the whole pipeline
    "data.options.n_train": 16,
    "data.options.n_val": 8,
    "data.options.n_test": 8,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED")
    parser.add_argument(
        "--sets", nargs="+", choices=sorted(TASK_SETS), default=list(TASK_SETS), help="task sets"
    )
    parser.add_argument(
        "--balancers",
        nargs="+",
        default=None,
        metavar="NAME",
        help="balancers to compare (default: every registered one but "
        f"{', '.join(LEFT_OUT)}); equal is always included, as the cost reference",
    )
    add_overrides_option(parser, "every run")
    add_provenance_options(parser)
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    parser.add_argument(
        "--timing-rounds", type=int, default=15, help="interleaved rounds of the cost timing"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 16 training scenes, 4 steps, 2 timing rounds unless given",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where the data and runs go (default runs/balancers, runs/balancers_quick with "
        "--quick); finished runs there are skipped, so use a fresh one for other sizes",
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="where the results go (default benchmarks/balancers, with --quick "
        "WORK_DIR/report so a smoke test never overwrites the committed results)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = args.steps or 4
        args.timing_rounds = 2
    if args.work_dir is None:
        args.work_dir = ROOT / "runs" / ("balancers_quick" if args.quick else "balancers")
    if args.report_dir is None:
        args.report_dir = args.work_dir / "report" if args.quick else HERE
    names = BALANCERS.names()
    unknown = sorted(set(args.balancers or []) - set(names))
    if unknown:
        parser.error(f"unknown balancers {unknown}; known: {', '.join(names)}")
    chosen = args.balancers or [name for name in names if name not in LEFT_OUT]
    args.balancers = ["equal", *(name for name in chosen if name != "equal")]
    return args


def scale_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` strings for the size options, before the user's own ``--set``."""
    overrides = [f"{key}={value}" for key, value in (QUICK.items() if args.quick else [])]
    if args.steps is not None:
        every = max(1, args.steps // 3)
        overrides += [
            f"train.steps={args.steps}",
            f"train.eval_every={every}",
            f"train.checkpoint_every={every}",
            f"train.log_every={every}",
        ]
    return overrides + args.overrides


def render_once(config: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """Write the config's synthetic splits (its tasks' labels only) under ``data_dir``, in a
    folder named by the tasks and the dataset options, unless it is there; the ``data``
    overrides that read them back."""
    data = config["data"]
    if data["dataset"] != "synthetic":
        raise ValueError(f"the task sets are synthetic, got data.dataset={data['dataset']!r}")
    key = json.dumps([list(config["tasks"]), data["options"]], sort_keys=True)
    folder = data_dir / hashlib.sha1(key.encode()).hexdigest()[:12]
    if not (folder / "dataset.json").is_file():
        tasks = list(config["tasks"])
        for split in SPLITS:
            scenes = create_dataset(
                "synthetic", split, label_kinds(), tasks=tasks, **data["options"]
            )
            samples = (scenes[index] for index in range(len(scenes)))
            write_folder_dataset(samples, folder, split, label_kinds(), scenes.task_options)
    return {"data.dataset": "folder", "data.root": str(folder), "data.options": {}}


def step_scaled_options(steps: int) -> dict[str, dict[str, int]]:
    """Options counted in steps, scaled to a run of ``steps`` steps: their defaults are meant
    for thousands of steps, and a 100-step run would never leave DWA's two-period warm-up
    (its weights stay 1: ``equal``) or STCH's 400-step warm-up (plain Σ log L_t)."""
    return {
        "dwa": {"period": max(1, steps // 10)},
        "stch": {"warmup_steps": max(2, steps // 4), "nadir_steps": max(1, steps // 10)},
    }


def seed_name(name: str, seed: int) -> str:
    return f"{name},seed={seed}"


def plan_task_set(
    base: dict[str, Any], balancers: list[str], seeds: list[int], runs_dir: Path
) -> list[PlannedRun]:
    """Single-task baselines and every balancer, once per seed."""
    runs: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        for task, options in base["tasks"].items():
            runs[seed_name(f"stl_{task}", seed)] = {
                "tasks": {task: options},
                "model.architecture": "single_task",
                "balancer.name": "equal",
                "seed": seed,
            }
        for name in balancers:
            options = step_scaled_options(base["train"]["steps"]).get(name, {})
            runs[seed_name(name, seed)] = {
                "balancer.name": name,
                "balancer.options": options,
                "seed": seed,
            }
    return plan_runs(base, runs, runs_dir)


def step_timer(config: RunConfig, balancer: str) -> Callable[[dict[str, Any]], float]:
    """A fresh network (the config's seed) and ``balancer``; calling it with a batch trains
    one step and returns its wall time in seconds."""
    torch.manual_seed(config.seed)
    options = step_scaled_options(config.train.steps).get(balancer, {})
    run = validate_config(
        {**config.to_dict(), "balancer": {"name": balancer, "options": options}}, source=balancer
    )
    tasks = build.build_tasks(run, build.open_training_dataset(run))
    model = build.build_model(run, tasks)
    balancer_module = build.build_balancer(run, tasks, model)
    optimizer = build_optimizer(
        run.train,
        model.encoder_parameters(),
        model.decoder_parameters(),
        balancer_module.parameters(),
    )
    parts = StepParts.on_cpu(model, tasks, balancer_module, optimizer, run.train, seed=run.seed)
    steps = iter(range(10**9))

    def timed(batch: dict[str, Any]) -> float:
        start = time.perf_counter()
        train_step(parts, batch, next(steps))
        return time.perf_counter() - start

    return timed


def first_batch(config: RunConfig) -> dict[str, Any]:
    """The run's first training batch, collated as the engine does."""
    dataset = build.open_training_dataset(config)
    tasks = build.build_tasks(config, dataset)
    model = build.build_model(config, tasks)
    dataset = build.attach_transform(config, dataset, tasks, model, train=True)
    kinds = build.run_label_kinds(tasks, model)
    loader = build.train_loader(config, dataset, kinds, 0, ProcessInfo())
    return to_device(next(iter(loader)), torch.device("cpu"))


def measure_costs(config: RunConfig, balancers: list[str], rounds: int) -> dict[str, Any]:
    """Median ms per training step of each balancer, and relative to ``equal``.

    Same batch, same initial network; two warm-up steps each, then ``rounds`` rounds of one
    step per balancer, the order rotated by one every round.
    """
    batch = first_batch(config)
    timers = {name: step_timer(config, name) for name in balancers}
    for timer in timers.values():
        for _ in range(2):
            timer(copy.copy(batch))
    samples: dict[str, list[float]] = {name: [] for name in balancers}
    for round_index in range(rounds):
        shift = round_index % len(balancers)
        for name in balancers[shift:] + balancers[:shift]:
            samples[name].append(timers[name](copy.copy(batch)))
    medians = {name: 1000 * statistics.median(values) for name, values in samples.items()}
    return {
        name: {
            "ms": medians[name],
            "relative": medians[name] / medians["equal"],
            "ms_quartiles": [1000 * q for q in statistics.quantiles(samples[name], n=4)]
            if rounds > 1
            else None,
        }
        for name in balancers
    }


def ranked_rows(report: dict[str, Any], costs: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows by mean Δm (primary metrics), best first, marked where the seeds cannot separate
    them from the best row or from ``equal``."""
    runs = report["runs"]
    spreads: list[Spread] = [
        (run["delta_m_percent"]["primary"], run["delta_m_percent"].get("primary_std"))
        for run in runs
    ]
    near_best = close_to_best(spreads, higher_is_better=True)
    equal = spreads[[run["name"] for run in runs].index("equal")]
    rows = [
        {
            "name": run["name"],
            "delta_m": spread[0],
            "delta_m_std": spread[1],
            "delta_m_per_seed": run["delta_m_percent"].get("primary_per_seed"),
            "within_spread_of_best": index in near_best,
            "within_spread_of_equal": run["name"] != "equal" and within_spread(spread, equal),
            "ms_per_step": costs[run["name"]]["ms"],
            "cost_vs_equal": costs[run["name"]]["relative"],
        }
        for index, (run, spread) in enumerate(zip(runs, spreads, strict=True))
    ]
    rows.sort(key=lambda row: -row["delta_m"])
    best = rows[0]["delta_m"]
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
        row["best"] = row["delta_m"] == best
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| rank | balancer | Δm % (mean ± std over seeds) | seeds separate it from the best? "
        "| from equal? | ms / step | × equal |",
        "|---:|---|---:|---|---|---:|---:|",
    ]
    for row in rows:
        versus_best = "no (≈)" if row["within_spread_of_best"] else "yes"
        versus_equal = "no (≈)" if row["within_spread_of_equal"] else "yes"
        if row["delta_m_std"] is None:
            versus_best = versus_equal = "n/a (one seed)"
        if row["best"]:
            versus_best = "(best)"
        if row["name"] == "equal":
            versus_equal = "(equal)"
        lines.append(
            f"| {row['rank']} | {row['name']} | {_mean_std(row['delta_m'], row['delta_m_std'])} "
            f"| {versus_best} | {versus_equal} | {row['ms_per_step']:.1f} "
            f"| {row['cost_vs_equal']:.2f} |"
        )
    near_best = [row["name"] for row in rows if row["within_spread_of_best"]]
    near_equal = [row["name"] for row in rows if row["within_spread_of_equal"]]
    lines += [
        "",
        f"Within the seeds' spread of the best ({rows[0]['name']}): {len(near_best)} of "
        f"{len(rows) - 1} ({', '.join(near_best) or 'none'}). Within the spread of equal: "
        f"{len(near_equal)} of {len(rows) - 1}; separated from it: "
        + (
            ", ".join(
                f"{row['name']} ({'better' if row['delta_m'] > equal_delta(rows) else 'worse'})"
                for row in rows
                if row["name"] != "equal" and not row["within_spread_of_equal"]
            )
            or "none"
        )
        + ".",
    ]
    return "\n".join(lines)


def equal_delta(rows: list[dict[str, Any]]) -> float:
    return next(row["delta_m"] for row in rows if row["name"] == "equal")


def _mean_std(mean: float, std: float | None) -> str:
    return f"{mean:+.2f}" if std is None else f"{mean:+.2f} ± {std:.2f}"


def pareto_png(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """One panel per task set: Δm (± std over seeds) against cost relative to equal, log x;
    the Pareto front (higher Δm, lower cost) joined and labelled in bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(7.5 * len(results), 6), squeeze=False)
    for axis, (task_set, rows) in zip(axes[0], results.items(), strict=True):
        points = [{"delta": row["delta_m"], "cost": row["cost_vs_equal"]} for row in rows]
        front = set(pareto_front(points, {"delta": True, "cost": False}))
        for index, row in enumerate(rows):
            on_front = index in front
            axis.errorbar(
                row["cost_vs_equal"],
                row["delta_m"],
                yerr=row["delta_m_std"] or 0.0,
                fmt="o",
                color="tab:red" if on_front else "tab:blue",
                alpha=1.0 if on_front else 0.6,
                capsize=2,
            )
            axis.annotate(
                row["name"],
                (row["cost_vs_equal"], row["delta_m"]),
                textcoords="offset points",
                xytext=(4, 3),
                fontsize=7,
                fontweight="bold" if on_front else "normal",
            )
        line = sorted((rows[index]["cost_vs_equal"], rows[index]["delta_m"]) for index in front)
        axis.plot(*zip(*line, strict=True), color="tab:red", linewidth=1, alpha=0.6)
        axis.set_xscale("log")
        axis.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
        axis.set_xlabel("cost per training step, relative to equal (log scale)")
        axis.set_ylabel("Δm % vs single-task (test, mean ± std over seeds)")
        axis.set_title(task_set.replace("_", " + "))
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def planned_runs(
    args: argparse.Namespace, task_set: str, work_dir: Path
) -> tuple[dict[str, Any], RunConfig, list[PlannedRun]]:
    """The raw config of ``task_set``, its base config reading the rendered scenes under
    ``work_dir/data``, and every run of it under ``work_dir/runs/<task_set>``."""
    raw = load_config(TASK_SETS[task_set], scale_overrides(args)).to_dict()
    data = render_once(raw, work_dir / "data")
    reading = [f"{key}={json.dumps(value)}" for key, value in data.items()]
    base = load_config(TASK_SETS[task_set], [*scale_overrides(args), *reading])
    runs_dir = work_dir / "runs" / task_set
    return raw, base, plan_task_set(base.to_dict(), args.balancers, args.seeds, runs_dir)


def run_task_set(args: argparse.Namespace, task_set: str) -> dict[str, Any]:
    """Train (or skip) every run of ``task_set``, write its report, time its balancers."""
    raw, base, planned = planned_runs(args, task_set, args.work_dir)
    by_name = {run.name: run for run in planned}
    print(f"{task_set}: {len(planned)} runs into {args.work_dir / 'runs' / task_set}")
    trained = run_sweep(planned, jobs=args.jobs, split="test")

    def seed_dirs(name: str) -> list[Path]:
        return [by_name[seed_name(name, seed)].run_dir for seed in args.seeds]

    baselines = [path for task in base.tasks for path in seed_dirs(f"stl_{task}")]
    groups = {name: seed_dirs(name) for name in args.balancers}
    report = write_report([], baselines, args.report_dir / task_set, "test", groups=groups)
    print(f"{task_set}: timing {len(args.balancers)} balancers, {args.timing_rounds} rounds")
    costs = measure_costs(base, args.balancers, args.timing_rounds)
    size = (
        f"{base.train.steps} steps, batch {base.data.batch_size}, "
        f"{base.data.crop_size[0]}×{base.data.crop_size[1]} px, encoder {base.model.encoder}, "
        f"{base.model.architecture}; scenes {raw['data']['options']}"
    )
    return {
        "rows": ranked_rows(report, costs),
        "costs": costs,
        "size": size,
        "trained": len(trained),
    }


def verify(args: argparse.Namespace, provenance: dict[str, Any]) -> int:
    """``--verify SET/RUN`` (``semseg_depth_normals/equal,seed=0``): retrain that run and
    compare its Δm against the committed report's baselines with the committed one."""
    task_set, _, run = args.verify.partition("/")
    if task_set not in TASK_SETS or not run:
        raise SystemExit(
            f"--verify SET/RUN with SET one of {', '.join(TASK_SETS)}, got {args.verify!r}"
        )
    report = json.loads((args.report_dir / task_set / "report.json").read_text())

    def retrain(folder: Path) -> Path:
        _, _, planned = planned_runs(args, task_set, folder)
        missing = f"{run!r} is not a run of {task_set} with these options"
        return train_named_run(planned, run, missing)

    log = VerifyLog(args.report_dir / VERIFICATIONS, provenance)
    return verify_report_run(run, report, retrain, args.tolerance, log)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads() // args.jobs))
    provenance = start_benchmark(__file__, args, argv, [args.report_dir], args.work_dir)
    if args.verify:
        return verify(args, provenance)
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    outcomes = {task_set: run_task_set(args, task_set) for task_set in args.sets}
    cpu_seconds = time.process_time() - cpu_start
    wall_seconds = time.perf_counter() - wall_start
    write_results(args, outcomes, cpu_seconds, wall_seconds, provenance)
    return 0


def write_results(
    args: argparse.Namespace,
    outcomes: dict[str, dict[str, Any]],
    cpu_seconds: float,
    wall_seconds: float,
    provenance: dict[str, Any],
) -> None:
    """``results.json``, ``results.md``, ``pareto.png`` and ``experiment.json``."""
    args.report_dir.mkdir(parents=True, exist_ok=True)
    command = provenance["command"]
    results = {task_set: outcome["rows"] for task_set, outcome in outcomes.items()}
    payload = {
        "provenance": provenance,
        "seeds": args.seeds,
        "left_out": LEFT_OUT,
        "task_sets": results,
        "costs": {task_set: outcome["costs"] for task_set, outcome in outcomes.items()},
    }
    (args.report_dir / "results.json").write_text(
        json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    )
    pareto_png(results, args.report_dir / "pareto.png")
    sections = [
        f"# Balancers head to head\n\nCommand: `{command}`; seeds {args.seeds}. Δm: mean "
        "relative gain of the primary metrics over the single-task runs (test split, best "
        "validation checkpoint of each run). Separate: |mean_a − mean_b| > std_a + std_b; "
        "≈: within the seeds' spread. Cost: median wall time of one training step, same batch "
        "and network, interleaved rounds."
    ]
    for task_set, outcome in outcomes.items():
        sections.append(
            f"## {task_set.replace('_', ' + ')}\n\n{outcome['size']}\n\n"
            + markdown_table(outcome["rows"])
        )
    (args.report_dir / "results.md").write_text("\n\n".join(sections) + "\n")
    settings = {
        "command": command,
        "overrides": scale_overrides(args),
        "seeds": args.seeds,
        "balancers": args.balancers,
        "sizes": {task_set: outcome["size"] for task_set, outcome in outcomes.items()},
        "trained_runs": {task_set: outcome["trained"] for task_set, outcome in outcomes.items()},
        "cpu_seconds": round(cpu_seconds, 1),
        "wall_seconds": round(wall_seconds, 1),
        "provenance": provenance,
    }
    (args.report_dir / "experiment.json").write_text(json.dumps(settings, indent=2) + "\n")
    print((args.report_dir / "results.md").read_text())


if __name__ == "__main__":
    sys.exit(main())
