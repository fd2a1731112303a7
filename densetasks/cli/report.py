"""``densetasks report``: compare runs with single-task baselines (per-task metrics, Δm)."""

import argparse
from pathlib import Path

from densetasks.experiments.report import format_text_table, write_report


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="compare runs with single-task baselines: metrics side by side and Δm",
        description="Read the metrics, event logs and sample pictures of finished runs and "
        "write report.md, report.html (self-contained) and report.json to --out: per-task "
        "metrics next to the single-task baselines, Δm over each task's primary metric and "
        "over all metrics, loss curves, effective loss weights, validation curves and sample "
        "predictions. The table is printed too.",
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="runs to compare")
    parser.add_argument(
        "--baseline",
        nargs="+",
        default=[],
        type=Path,
        metavar="RUN_DIR",
        help="single-task runs (one task each), matched to tasks by what they trained",
    )
    parser.add_argument(
        "--split", default="test", choices=["test", "val"], help="metrics to compare (default test)"
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for the report files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = write_report(args.runs, args.baseline, args.out, split=args.split)
    print(format_text_table(report))
    print(f"report written to {args.out / 'report.md'} and {args.out / 'report.html'}")
    return 0
