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
