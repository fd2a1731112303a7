"""``densetasks data check ROOT --format NAME``: open a dataset on disk and read it all.

Builds the format's reader for each split (or the one asked for), loads every sample (or
the first ``--limit``), and prints the counts per split, the tasks and, for class tasks,
the fraction of labelled pixels per class. Any problem is a DataError naming the file; the
command line prints it and exits non-zero.
"""

import argparse
from pathlib import Path
from typing import Any

import torch

from densetasks.data.dataset import DenseDataset
from densetasks.data.readers import READERS
from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check",
        help="validate a real dataset folder and summarise it",
        description="Read every sample of a dataset in a published layout and print counts "
        "per split, the tasks and the class histogram; exit non-zero on the first problem.",
    )
    parser.add_argument("root", type=Path, help="dataset root folder")
    parser.add_argument("--format", required=True, choices=READERS.names(), help="layout")
    parser.add_argument("--split", help="check only this split (default: every split)")
    parser.add_argument("--limit", type=int, help="load at most this many samples per split")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    reader = READERS.get(args.format)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    for split in [args.split] if args.split else list(reader.splits):
        dataset = reader(args.root, split=split)
        count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
        present, pixel_counts = _read_samples(dataset, count)
        print(f"{split}: {len(dataset)} samples, {count} loaded")
        tasks = ", ".join(f"{task} ({present[task]}/{count})" for task in dataset.tasks)
        print(f"  tasks: {tasks}")
        for task, counts in pixel_counts.items():
            _print_class_fractions(task, counts, dataset.task_options[task])
    return 0


def _read_samples(
    dataset: DenseDataset, count: int
) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """Load the first ``count`` samples (so every file is checked); how many hold each task,
    and the labelled pixels per class of each class task."""
    pixel_counts = {
        task: torch.zeros(options["num_classes"], dtype=torch.int64)
        for task, options in dataset.task_options.items()
        if "num_classes" in options
    }
    present = dict.fromkeys(dataset.tasks, 0)
    for index in range(count):
        sample = dataset.load(index)
        for task in dataset.tasks:
            present[task] += task in sample
        for task, counts in pixel_counts.items():
            if task in sample:
                labelled = sample[task][sample[task] != IGNORE_INDEX]
                counts += torch.bincount(labelled.flatten(), minlength=len(counts))
    return present, pixel_counts


def _print_class_fractions(task: str, counts: torch.Tensor, options: dict[str, Any]) -> None:
    """Each class's share of the labelled pixels, by class name where the reader has them."""
    print(f"  {task} pixel fraction per class:")
    names = options.get("class_names", [str(index) for index in range(len(counts))])
    total = max(int(counts.sum()), 1)
    for name, value in zip(names, counts.tolist(), strict=True):
        print(f"    {name:<16} {value / total:.4f}")
