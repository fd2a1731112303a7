"""``densetasks train CONFIG``: train a multi-task network described by one YAML file."""

import argparse
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
        help="continue the run in --out from its last checkpoint, exactly",
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

    overrides = list(args.overrides)
    if args.init_from is not None:
        overrides.append(f"model.init_from={args.init_from}")
    config = load_config(args.config, overrides)
    out = args.out if args.out is not None else Path("runs") / args.config.stem
    run_dir = train(config, out, resume=args.resume)
    print(f"run finished: {run_dir}")
    return 0
