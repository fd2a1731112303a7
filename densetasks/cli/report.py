"""``densetasks report``: compare runs with single-task baselines (per-task metrics, Δm).

A row is one run (``RUN_DIR``) or the seeds of one config (``--group NAME RUN_DIR ...``),
shown as mean ± std; see ``docs/report.md``.
"""

import argparse
from pathlib import Path

from densetasks.errors import ConfigError
from densetasks.experiments.report import format_text_table, write_report


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="compare runs with single-task baselines: metrics side by side and Δm",
        description="Read the metrics, event logs and sample pictures of finished runs and "
        "write report.md, report.html (self-contained) and report.json to --out: per-task "
        "metrics next to the single-task baselines, Δm over each task's primary metric and "
        "over all metrics, loss curves, effective loss weights, validation curves and sample "
        "predictions. The table is printed too. A --group row holds several seeds of one "
        "config and shows mean ± std.",
    )
    parser.add_argument(
        "runs", nargs="*", type=Path, metavar="RUN_DIR", help="runs to compare, one row each"
    )
    parser.add_argument(
        "--group",
        dest="groups",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "RUN_DIR"),
        help="one row NAME of several runs that differ only by their seed (checked), shown as "
        "mean ± std, e.g. --group mtl runs/mtl_s0 runs/mtl_s1 runs/mtl_s2 (repeatable; "
        "after the RUN_DIR rows)",
    )
    parser.add_argument(
        "--baseline",
        nargs="+",
        default=[],
        type=Path,
        metavar="RUN_DIR",
        help="single-task runs (one task each), matched to tasks by what they trained; "
        "several runs of one task are its seeds (averaged)",
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=["test", "val", "target_test", "target_val"],
        help="metrics to compare (default test); target_*: the target domain of runs with "
        "data.target (metrics_target_<split>.json)",
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for the report files")
    parser.set_defaults(func=run)


def parse_groups(items: list[list[str]]) -> dict[str, list[Path]]:
    """``[["mtl", "runs/a", "runs/b"]]`` -> ``{"mtl": [Path("runs/a"), Path("runs/b")]}``.

    A group without runs, a name given twice, or a name that is a directory (the name was
    forgotten) is a :class:`ConfigError`.
    """
    groups: dict[str, list[Path]] = {}
    for name, *run_dirs in items:
        if Path(name).is_dir():
            raise ConfigError(
                f"--group {name} ...: the first value is the row's name, not a run directory"
            )
        if not run_dirs:
            raise ConfigError(f"--group {name}: no run directories after the name")
        if name in groups:
            raise ConfigError(f"--group {name}: the name is given twice")
        groups[name] = [Path(run_dir) for run_dir in run_dirs]
    return groups


def run(args: argparse.Namespace) -> int:
    groups = parse_groups(args.groups)
    if not args.runs and not groups:
        raise ConfigError("give at least one RUN_DIR or --group NAME RUN_DIR ...")
    report = write_report(args.runs, args.baseline, args.out, split=args.split, groups=groups)
    print(format_text_table(report))
    print(f"report written to {args.out / 'report.md'} and {args.out / 'report.html'}")
    return 0
