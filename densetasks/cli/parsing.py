"""Argument types shared by several commands."""

import argparse


def parse_size(text: str) -> tuple[int, int]:
    """``"64x48"`` -> ``(64, 48)`` (height, width); ``"64"`` -> ``(64, 64)``."""
    parts = text.lower().split("x")
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"size must be HxW with positive integers, got {text!r}")
    return values  # type: ignore[return-value]


def add_overrides_option(parser: argparse.ArgumentParser, applies_to: str) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.overrides``: a config value by dotted key,
    for ``applies_to`` (e.g. "the run", "every run")."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value for {applies_to} by dotted key, e.g. --set "
        "train.lr=1e-3 (repeatable)",
    )
