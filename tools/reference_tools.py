"""What the scripts that compare densetasks with an authors' code have in common: the command
line (the reference checkout, the densetasks checkout to import, the tasks), random
normalisation weights, and the difference of two outputs.

The scripts import this module as their neighbour (``python tools/compare_*.py REFERENCE``
puts ``tools/`` first on the path); it imports nothing of densetasks, so that ``--checkout``
decides which densetasks the comparison runs.
"""

import argparse
from pathlib import Path

import torch
from torch import nn


def comparison_parser(
    doc: str, reference_help: str, default_tasks: list[str], tasks_help: str
) -> argparse.ArgumentParser:
    """``REFERENCE`` (the authors' checkout), ``--checkout`` (densetasks, default: the one
    holding the script) and ``--tasks task:channels ...``; a script adds its own options."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("reference", type=Path, help=reference_help)
    parser.add_argument(
        "--checkout",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="the densetasks checkout to import (default: the one holding this script)",
    )
    parser.add_argument("--tasks", nargs="+", default=default_tasks, help=tasks_help)
    return parser


def parse_tasks(items: list[str]) -> dict[str, int]:
    """``["semseg:40", "depth:1"]`` -> ``{"semseg": 40, "depth": 1}``."""
    return {task: int(channels) for task, channels in (item.split(":") for item in items)}


def randomise_norms(model: nn.Module, generator: torch.Generator) -> None:
    """Batch-norm and layer-norm affines, and batch-norm running statistics, away from their
    initial values (ones and zeros would hide a swapped or missing tensor)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
                shape = module.weight.shape
                module.weight.copy_(0.5 + torch.rand(shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(shape, generator=generator))
            if isinstance(module, nn.BatchNorm2d):
                shape = module.running_mean.shape
                module.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(shape, generator=generator))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b|; tensors of different shapes are an error, not a difference."""
    if a.shape != b.shape:
        raise SystemExit(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a - b).abs().max().item()
