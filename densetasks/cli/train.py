"""``densetasks train CONFIG``: train a multi-task network described by one YAML file.

A run stopped by SIGTERM, SIGINT or SIGUSR1 (a scheduler, Ctrl-C, Slurm's warning) finishes
its step, writes ``last.pt``, prints one line saying how to continue, and exits with 128 +
the signal's number (143, 130, 138), as a process killed by it would
(``docs/reliability.md``).
"""

import argparse
import os
import shlex
import sys
from pathlib import Path

from densetasks.cli.parsing import add_overrides_option


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a network from a YAML config (also under torchrun)",
        description="Validate CONFIG (with --set overrides), then train, evaluating on the "
        "validation split and keeping the best checkpoint; writes everything to the run "
        "directory. Under torchrun every process runs this same command.",
    )
    parser.add_argument("config", type=Path, metavar="CONFIG", help="YAML run configuration")
    add_overrides_option(parser, "the run")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run directory (default runs/<config file stem>)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, exactly (a run directory "
        "without a checkpoint yet starts afresh, so a scheduler can always pass it)",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="start from the weights of another run's best checkpoint that match this "
        "model (same as --set model.init_from=RUN_DIR), e.g. to fine-tune to a new rule",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from densetasks.engine import load_config, train
    from densetasks.engine.signals import TrainingStopped

    overrides = list(args.overrides)
    if args.init_from is not None:
        overrides.append(f"model.init_from={args.init_from}")
    config = load_config(args.config, overrides)
    out = args.out if args.out is not None else Path("runs") / args.config.stem
    try:
        run_dir = train(config, out, resume=args.resume)
    except TrainingStopped as stop:
        if int(os.environ.get("RANK", "0")) == 0:
            hint = continue_hint(args.config, out, overrides)
            print(f"densetasks: {stop}; {hint}", file=sys.stderr, flush=True)
        return stop.exit_status
    print(f"run finished: {run_dir}")
    return 0


def continue_hint(config: Path, out: Path, overrides: list[str]) -> str:
    """``continue with: densetasks train CONFIG --out OUT [--set KEY=VALUE ...] --resume``."""
    argv = ["densetasks", "train", str(config), "--out", str(out)]
    for override in overrides:
        argv += ["--set", override]
    command = shlex.join([*argv, "--resume"])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"continue with the same torchrun options and: {command}"
    return f"continue with: {command}"
