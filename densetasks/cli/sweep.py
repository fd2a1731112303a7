"""``densetasks sweep CONFIG --grid key=v1,v2 ... [--seeds 0 1 2]``: one run per combination.

Reproduces Kendall, Gal & Cipolla (CVPR 2018), Fig. 2 for any dotted config key; see
``docs/sweep.md``. The command wires :mod:`densetasks.experiments.sweep` (runs, table) to
:mod:`densetasks.experiments.sweep_plots` (the figure), which the library keeps apart.
"""

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from densetasks.cli.parsing import add_overrides_option

if TYPE_CHECKING:
    from densetasks.experiments.sweep import Backend


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="train one run per combination of config values and compare them (Pareto front)",
        description="Expand the Cartesian product of the --grid options, validate every "
        "resulting config, train each combination into OUT/runs/<key=value,...> (a finished "
        "run is skipped, an interrupted one resumed; --seeds trains each combination once per "
        "seed, into OUT/runs/<key=value,...,seed=N>), then write OUT/sweep.json, OUT/sweep.md "
        "(one row per combination, each task's primary metric, the Pareto-optimal runs) and "
        "OUT/sweep.png (metrics against the setting, as Kendall et al. 2018 Fig. 2, and Pareto "
        "fronts). --backend ray trains each run as a Ray task, on this machine or a cluster.",
    )
    parser.add_argument("config", type=Path, metavar="CONFIG", help="YAML run configuration")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="a dotted config key and its values (YAML scalars), e.g. "
        "--grid balancer.weights.semseg=1,10,50 (repeatable; the runs are the product)",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[],
        metavar="SEED",
        help="train every combination once per seed (the config's top-level seed), e.g. "
        "--seeds 0 1 2; the run folders end in seed=N (same as --grid seed=0,1,2)",
    )
    add_overrides_option(parser, "every run")
    parser.add_argument("--out", required=True, type=Path, help="sweep folder")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="local backend: runs trained at once in separate processes (default 1: sequential)",
    )
    parser.add_argument(
        "--backend",
        default="local",
        choices=["local", "ray"],
        help="what trains the runs: local (this machine, --jobs) or ray (one Ray task per run, "
        "on a local Ray instance or the cluster at --address; needs densetasks[ray])",
    )
    parser.add_argument(
        "--address",
        help="ray backend: the Ray cluster, e.g. auto (the cluster this node belongs to) or "
        "ray://HEAD:10001 (from outside it; needs ray[client]); default: RAY_ADDRESS, a cluster "
        "started on this machine, else a new local Ray instance",
    )
    parser.add_argument(
        "--cpus-per-run",
        type=float,
        help="ray backend: CPUs each run reserves, also its torch threads (default 1)",
    )
    parser.add_argument(
        "--gpus-per-run",
        type=float,
        help="ray backend: GPUs each run reserves, e.g. 1 (default 0)",
    )
    parser.add_argument(
        "--split",
        default="val",
        choices=["val", "test"],
        help="metrics compared in the table and plots (default val)",
    )
    parser.add_argument(
        "--mark",
        nargs="+",
        default=[],
        type=Path,
        metavar="RUN_DIR",
        help="finished runs added to the table and plots, drawn distinctly "
        "(e.g. the uncertainty-weighted run)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from densetasks.engine.config import load_config
    from densetasks.errors import ConfigError
    from densetasks.experiments.sweep import (
        add_seed_axis,
        collect_results,
        format_sweep_table,
        parse_grid,
        plan_grid,
        run_sweep,
        write_sweep,
    )
    from densetasks.experiments.sweep_plots import sweep_figure_png

    backend = _backend(args)
    if not args.grid and not args.seeds:
        raise ConfigError("give at least one --grid KEY=V1,V2,... or --seeds SEED ...")
    grid = add_seed_axis(parse_grid(args.grid), args.seeds)
    base = load_config(args.config, args.overrides).to_dict()
    planned = plan_grid(base, grid, args.out / "runs")
    print(f"sweep: {len(planned)} runs into {args.out / 'runs'}")
    run_sweep(planned, jobs=args.jobs, split=args.split, backend=backend)
    result = collect_results(planned, args.split, marked=args.mark, keys=list(grid))
    write_sweep(result, args.out, render_png=sweep_figure_png)
    print(format_sweep_table(result))
    print(f"sweep written to {args.out / 'sweep.md'}")
    return 0


def _backend(args: argparse.Namespace) -> "Backend | None":
    """The Ray backend for ``--backend ray`` (None: the local one); rejects the other's flags."""
    from densetasks.errors import ConfigError
    from densetasks.experiments.sweep_ray import ray_backend

    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    ray_flags = {
        "--address": args.address,
        "--cpus-per-run": args.cpus_per_run,
        "--gpus-per-run": args.gpus_per_run,
    }
    if args.backend == "local":
        given = [flag for flag, value in ray_flags.items() if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)}: only for --backend ray")
        return None
    if args.jobs != 1:
        raise ConfigError(
            "--jobs is for --backend local; Ray runs as many runs at once as the "
            "cluster has CPUs for (--cpus-per-run)"
        )
    cpus = 1.0 if args.cpus_per_run is None else args.cpus_per_run
    gpus = 0.0 if args.gpus_per_run is None else args.gpus_per_run
    return ray_backend(args.address, cpus, gpus)
