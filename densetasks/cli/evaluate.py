"""``densetasks eval RUN_DIR``: metrics of a run's best checkpoint on val or test, or on the
val or test split of its ``data.target`` (a domain-adaptation run, Lopes et al. 2023 Sec. 4.5)."""

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a run's best checkpoint",
        description="Evaluate the best checkpoint of RUN_DIR on a split, print the metrics "
        "and write them to RUN_DIR/metrics_<split>.json. target_val and target_test are the "
        "val and test splits of the config's data.target.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a trained run directory")
    parser.add_argument(
        "--split",
        choices=("val", "test", "target_val", "target_test"),
        default="val",
        help="default val; target_*: the split of data.target",
    )
    parser.add_argument(
        "--checkpoint", choices=("best", "last"), default="best", help="default best"
    )
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from densetasks.engine import evaluate_run

    payload = evaluate_run(
        args.run_dir, split=args.split, device=args.device, checkpoint=args.checkpoint
    )
    print(json.dumps(payload, indent=2) if args.json else format_table(payload))
    return 0


def format_table(payload: dict[str, Any]) -> str:
    """One row per (task, metric); the primary metric is starred, arrows say which way is better."""
    rows = [("task", "metric", "value")]
    for task, values in payload["metrics"].items():
        for name, value in values.items():
            arrow = "↑" if payload["higher_is_better"][task][name] else "↓"
            star = "*" if payload["primary"].get(task) == name else ""
            rows.append((task, f"{name}{star} {arrow}", f"{value:.4f}"))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = [f"{payload['split']} @ step {payload['step']}"]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    return "\n".join(lines)
