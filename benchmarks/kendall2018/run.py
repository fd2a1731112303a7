"""Kendall, Gal & Cipolla, CVPR 2018, Table 1 and Fig. 2, on the synthetic scenes.

One command trains, on ``configs/kendall2018_synthetic.yaml`` (semantic + instance + inverse
depth, DeepLabV3-style ResNet-18 + ASPP, scaled down for the CPU):

* the three single-task models (``model.architecture=single_task``), the baselines of Δm;
* the unweighted sum of losses (``balancer.name=equal``), Table 1 "Unweighted sum of losses";
* a small grid of fixed weights (``balancer.name=fixed``, semseg weight 1) through
  ``densetasks.experiments.sweep``, Table 1 "Approx. optimal weights": the grid run with the best
  Δm on the validation split is kept;
* uncertainty weighting (``balancer.name=uncertainty``), Table 1 "3 task uncertainty".

Then it writes the comparison (``densetasks report``: per-task metrics and Δm against the
single-task runs, on the test split) to ``--report-dir`` as report.md / report.html /
report.json, and the sweep table and Fig. 2-style plot (val split, the equal and uncertainty
runs marked) to ``--report-dir/sweep``. Finished runs are skipped, so an interrupted
experiment continues where it stopped. With ``--seeds 0 1 2`` every run is trained once per
seed (``<name>,seed=<s>``) and the report shows mean ± std over the seeds (``densetasks report
--group``). The grid is searched once, as a grid search is: its settings are trained with the
first seed, the one with the best validation Δm is kept and only that one is trained with the
other seeds (``--grid-every-seed`` trains the whole grid with every seed and keeps the best
mean). The sweep plot shows the first seed. See ``benchmarks/kendall2018/README.md``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from densetasks.cli.parsing import add_overrides_option
from densetasks.engine.config import load_config
from densetasks.experiments.provenance import add_provenance_options, start_benchmark
from densetasks.experiments.report import (
    build_report,
    format_text_table,
    load_group,
    load_records,
    write_report,
)
from densetasks.experiments.sweep import (
    collect_results,
    combination_name,
    expand_grid,
    parse_grid,
    plan_runs,
    run_sweep,
    train_named_run,
    write_sweep,
)
from densetasks.experiments.sweep_plots import sweep_figure_png
from densetasks.experiments.verify import VERIFICATIONS, VerifyLog, verify_report_run

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "configs" / "kendall2018_synthetic.yaml"
# Initial losses of the synthetic config (untrained network, one batch): semseg CE ≈ 1.9,
# instance L1 ≈ 16 px, inverse depth L1 ≈ 0.33. The grid brings instance and depth towards
# the semantic loss's scale, around the paper's approximate optimum 0.89 : 0.01 : 0.1 (Table 1)
# which also down-weights the pixel-scale instance loss.
DEFAULT_GRID = ["balancer.weights.instance=0.02,0.1", "balancer.weights.depth=1,5"]
QUICK = {  # a smoke test of the whole pipeline: the tiny encoder, a few steps, small scenes
    "model.encoder": "tiny",
    "model.options.bottleneck": "none",
    "data.options.n_train": 16,
    "data.options.n_val": 4,
    "data.options.n_test": 4,
    "data.workers": 0,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="base config")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run")
    parser.add_argument("--size", type=int, default=None, help="square scene and crop size (px)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: tiny encoder, 16 training scenes, 10 steps at 64 px unless given, "
        "one evaluation at the end",
    )
    parser.add_argument(
        "--grid",
        action="append",
        default=None,
        metavar="KEY=V1,V2,...",
        help=f"fixed-weight grid (repeatable; default {' '.join(DEFAULT_GRID)})",
    )
    add_overrides_option(parser, "every run")
    add_provenance_options(parser)
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="SEED",
        help="train every run once per seed and report mean ± std (default: the config's seed)",
    )
    parser.add_argument(
        "--grid-every-seed",
        action="store_true",
        help="train the whole fixed-weight grid with every seed (default: with the first seed "
        "only, then the chosen setting with the other seeds)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=ROOT / "runs" / "kendall2018",
        help="where the run directories go (default runs/kendall2018)",
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="where report and sweep go (default benchmarks/kendall2018, with --quick "
        "WORK_DIR/report so a smoke test never overwrites the committed results)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = args.steps or 10
        args.size = args.size or 64
    if args.report_dir is None:
        args.report_dir = args.work_dir / "report" if args.quick else Path(__file__).parent
    return args


def scale_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` strings for the scale options, before the user's own ``--set``."""
    overrides = [f"{key}={value}" for key, value in (QUICK.items() if args.quick else [])]
    if args.steps is not None:
        every = args.steps if args.quick else max(1, args.steps // 5)
        overrides += [
            f"train.steps={args.steps}",
            f"train.eval_every={every}",
            f"train.checkpoint_every={every}",
            f"train.log_every={max(1, every // 10)}",
        ]
    if args.size is not None:
        overrides += [
            f"data.options.size=[{args.size}, {args.size}]",
            f"data.crop_size=[{args.size}, {args.size}]",
        ]
    return overrides + args.overrides


def experiment_runs(base: dict) -> dict[str, dict]:
    """Single-task baselines, the unweighted sum and uncertainty weighting, by run name."""
    runs = {
        f"stl_{task}": {
            "tasks": {task: options},
            "model.architecture": "single_task",
            "balancer.name": "equal",
            "balancer.weights": {},
        }
        for task, options in base["tasks"].items()
    }
    runs["equal"] = {"balancer.name": "equal", "balancer.weights": {}}
    runs["uncertainty"] = {"balancer.name": "uncertainty", "balancer.weights": {}}
    return runs


def grid_runs(grid_items: list[str]) -> dict[str, dict]:
    """The fixed-weight runs: semseg weight 1, the other weights from the grid."""
    fixed = {"balancer.name": "fixed", "balancer.weights.semseg": 1.0}
    return {
        f"fixed_{combination_name(combo)}": {**fixed, **combo}
        for combo in expand_grid(parse_grid(grid_items))
    }


def seeded(runs: dict[str, dict], seeds: list[int] | None) -> dict[str, dict]:
    """Every run once per seed (named ``<name>,seed=<s>``), or the runs as they are."""
    if not seeds:
        return runs
    return {
        seed_name(name, seed): {**overrides, "seed": seed}
        for name, overrides in runs.items()
        for seed in seeds
    }


def seed_name(name: str, seed: int | None) -> str:
    return name if seed is None else f"{name},seed={seed}"


def grid_delta_m(
    candidates: dict[str, list[Path]], baselines: list[Path], split: str
) -> dict[str, float | None]:
    """Each row's (its seeds' runs') mean Δm over the primary metrics on ``split``."""
    rows = [load_group(name, dirs, split) for name, dirs in candidates.items()]
    report = build_report(rows, load_records(baselines, split), split)
    scores = [run["delta_m_percent"]["primary"] for run in report["runs"]]
    for name, score in zip(candidates, scores, strict=True):
        print(f"grid: {name}: Δm {score:+.2f}% on {split}")
    return dict(zip(candidates, scores, strict=True))


def best_by_delta_m(scores: dict[str, float | None]) -> str:
    """The row with the highest Δm (the first of equals; rows without one last)."""
    return max(scores, key=lambda name: float("-inf") if scores[name] is None else scores[name])


def all_runs(base: dict, fixed: dict[str, dict], args: argparse.Namespace) -> dict[str, dict]:
    """Every run the benchmark may train, the grid with every seed (``--verify`` picks one)."""
    return {**seeded(experiment_runs(base), args.seeds), **seeded(fixed, args.seeds)}


def verify(args: argparse.Namespace, base: dict, fixed: dict[str, dict], provenance: dict) -> int:
    """``--verify RUN`` (``equal,seed=0``): retrain that run and compare its Δm against the
    committed report's single-task seeds with the committed one."""
    report = json.loads((args.report_dir / "report.json").read_text())

    def retrain(folder: Path) -> Path:
        planned = plan_runs(base, all_runs(base, fixed, args), folder)
        missing = f"--verify: {args.verify!r} is not a run of these options"
        return train_named_run(planned, args.verify, missing)

    log = VerifyLog(args.report_dir / VERIFICATIONS, provenance)
    return verify_report_run(args.verify, report, retrain, args.tolerance, log)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads() // args.jobs))
    provenance = start_benchmark(__file__, args, argv, [args.report_dir], args.work_dir)
    base = load_config(args.config, scale_overrides(args)).to_dict()
    fixed = grid_runs(args.grid or DEFAULT_GRID)
    if args.verify:
        return verify(args, base, fixed, provenance)
    seeds = args.seeds or [None]
    grid_seeds = seeds if args.grid_every_seed else seeds[:1]
    runs = {
        **seeded(experiment_runs(base), args.seeds),
        **seeded(fixed, grid_seeds if args.seeds else None),
    }
    planned = plan_runs(base, runs, args.work_dir / "runs")

    def seed_dirs(name: str, among: list[int | None] = seeds) -> list[Path]:
        return [args.work_dir / "runs" / seed_name(name, seed) for seed in among]

    print(f"kendall2018: {len(planned)} runs into {args.work_dir / 'runs'}")
    start = time.perf_counter()
    trained = run_sweep(planned, jobs=args.jobs, split="test")
    baselines = [path for task in base["tasks"] for path in seed_dirs(f"stl_{task}", grid_seeds)]
    grid_scores = grid_delta_m(
        {name: seed_dirs(name, grid_seeds) for name in fixed}, baselines, "val"
    )
    best = best_by_delta_m(grid_scores)
    rest = [seed for seed in seeds if seed not in grid_seeds]
    if rest:
        planned += plan_runs(base, seeded({best: fixed[best]}, rest), args.work_dir / "runs")
        trained += run_sweep(planned, jobs=args.jobs, split="test")
    by_name = {run.name: run for run in planned}
    elapsed = time.perf_counter() - start
    print(f"trained {len(trained)} runs in {elapsed:.0f} s")

    baselines = [path for task in base["tasks"] for path in seed_dirs(f"stl_{task}")]
    compared = {name: seed_dirs(name) for name in ("equal", best, "uncertainty")}
    report = write_report([], baselines, args.report_dir, split="test", groups=compared)
    print(format_text_table(report))

    first = seeds[0]
    sweep = collect_results(
        [by_name[seed_name(name, first)] for name in fixed],
        "val",
        marked=[by_name[seed_name(name, first)].run_dir for name in ("equal", "uncertainty")],
        keys=list(parse_grid(args.grid or DEFAULT_GRID)),
    )
    write_sweep(sweep, args.report_dir / "sweep", render_png=sweep_figure_png)
    settings = {
        "provenance": provenance,
        "command": provenance["command"],
        "overrides": scale_overrides(args),
        "grid_val_delta_m_percent": grid_scores,
        "grid_seeds": grid_seeds,
        "best_grid_run": best,
        "seeds": args.seeds,
        "trained_runs": trained,
        "training_seconds": round(elapsed, 1),
    }
    (args.report_dir / "experiment.json").write_text(json.dumps(settings, indent=2) + "\n")
    print(
        f"report: {args.report_dir / 'report.md'}; sweep: {args.report_dir / 'sweep' / 'sweep.md'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
