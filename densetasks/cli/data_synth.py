"""``densetasks data synth``: write a synthetic dataset in the generic folder format."""

import argparse
from pathlib import Path

from densetasks.cli.parsing import parse_size
from densetasks.data.folder import FolderDataset, write_folder_dataset
from densetasks.data.synthetic import STYLES, SyntheticScenes


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="render synthetic indoor scenes with labels for all seven tasks",
        description="Render N procedural scenes and write them in the folder format "
        "(images/, one folder per task, splits/, dataset.json), then print a summary.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output dataset folder")
    parser.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    parser.add_argument("--size", type=parse_size, default=(128, 128), help="HxW (default 128x128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--style", default="default", choices=sorted(STYLES), help="appearance")
    parser.add_argument("--split", default="train", help="split name to write (default train)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    scenes = SyntheticScenes(n=args.n, size=args.size, seed=args.seed, style=args.style)
    written = write_folder_dataset(
        (scenes[index] for index in range(len(scenes))), args.out, args.split, scenes.task_options
    )
    dataset = FolderDataset(args.out, split=args.split)
    height, width = args.size
    print(f"wrote {written} samples of {height}x{width} to {args.out} (split {args.split!r})")
    print(f"tasks: {', '.join(dataset.tasks)}")
    for task, options in sorted(dataset.task_options.items()):
        if "class_names" in options:
            print(f"{task} classes: {', '.join(options['class_names'])}")
    return 0
