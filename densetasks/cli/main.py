"""The ``densetasks`` command: parses arguments and dispatches to one module per command.

Each command module exposes ``add_parser(subparsers)`` which registers its parser and sets
``func`` (called with the parsed namespace, returns an exit code). Errors of densetasks
(:class:`~densetasks.errors.DenseTasksError`) print as one line unless ``--debug`` (exit
status 2), and so do its warnings (:class:`~densetasks.errors.DenseTasksWarning`); Ctrl-C
outside training prints ``densetasks: interrupted`` (exit status 130).
"""

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence

from densetasks.cli import (
    data_check,
    data_normals,
    data_synth,
    demo,
    evaluate,
    export,
    predict,
    report,
    serve,
    sweep,
    train,
)
from densetasks.errors import DenseTasksError, DenseTasksWarning, own_message


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densetasks",
        description="Dense multi-task learning: train, evaluate, compare and use networks "
        "that predict several per-pixel tasks from one image.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_parser = subparsers.add_parser("data", help="make, convert and check datasets")
    data_commands = data_parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    for module in _data_command_modules():
        module.add_parser(data_commands)
    for module in _command_modules():
        module.add_parser(subparsers)
    return parser


def _data_command_modules() -> list:
    return [data_synth, data_normals, data_check]


def _command_modules() -> list:
    return [train, evaluate, predict, report, sweep, demo, serve, export]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", DenseTasksWarning)
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            return int(args.func(args) or 0)
    except DenseTasksError as error:
        if args.debug:
            raise
        print(f"densetasks: error: {own_message(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("densetasks: interrupted", file=sys.stderr)
        return 130


def _one_line_warnings(show: Callable[..., None]) -> Callable[..., None]:
    """``warnings.showwarning`` that prints a :class:`DenseTasksWarning` as one line on
    standard error and passes other warnings to ``show``."""

    def shown(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, DenseTasksWarning):
            print(f"densetasks: warning: {message}", file=sys.stderr, flush=True)
        else:
            show(message, category, filename, lineno, file, line)

    return shown


if __name__ == "__main__":
    sys.exit(main())
