"""``densetasks data synth``: write a synthetic dataset in the generic folder format."""

import argparse
from collections.abc import Iterator
from pathlib import Path

from densetasks.cli.parsing import parse_size
from densetasks.data.dataset import Sample
from densetasks.data.folder import FolderDataset, write_folder_dataset
from densetasks.data.geometry import normals_from_depth, preset_options
from densetasks.data.synthetic import STYLES, SyntheticScenes
from densetasks.data.synthetic.depth_noise import DEPTH_NOISE_MODELS
from densetasks.errors import ConfigError
from densetasks.tasks.registry import label_kinds


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
    parser.add_argument(
        "--depth-noise",
        choices=DEPTH_NOISE_MODELS,
        default="none",
        help="none: exact depth (default); kinect: Kinect-like depth (disparity quantisation, "
        "holes at depth edges and projector shadows, 0 outside 0.8-4 m)",
    )
    parser.add_argument(
        "--normals-from-depth",
        action="store_true",
        help="with --depth-noise kinect: write normals computed from the noisy depth with the "
        "real-depth preset (in-painting, edge-aware planes) instead of the exact normals; "
        "pixels whose depth was in-painted are invalid (zero vector)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.normals_from_depth and args.depth_noise == "none":
        raise ConfigError(
            "--normals-from-depth needs --depth-noise kinect (exact depth comes with exact normals)"
        )
    scenes = SyntheticScenes(
        n=args.n, size=args.size, seed=args.seed, style=args.style, depth_noise=args.depth_noise
    )
    samples = (scenes[index] for index in range(len(scenes)))
    if args.normals_from_depth:
        samples = _with_normals_from_depth(samples, args.size[1])
    kinds = label_kinds()
    written = write_folder_dataset(samples, args.out, args.split, kinds, scenes.task_options)
    dataset = FolderDataset(args.out, split=args.split, label_kinds=kinds)
    height, width = args.size
    print(f"wrote {written} samples of {height}x{width} to {args.out} (split {args.split!r})")
    print(f"tasks: {', '.join(dataset.tasks)}")
    if args.depth_noise != "none":
        source = "the noisy depth" if args.normals_from_depth else "the exact geometry"
        print(f"depth: {args.depth_noise}-like noise; normals from {source}")
    for task, options in sorted(dataset.task_options.items()):
        if "class_names" in options:
            print(f"{task} classes: {', '.join(options['class_names'])}")
    return 0


def _with_normals_from_depth(samples: Iterator[Sample], width: int) -> Iterator[Sample]:
    """The samples with normals from their (noisy) depth, as ``densetasks data normals
    --preset real`` computes them: Hickson et al., network fission, supplementary Sec. 2.2."""
    options = preset_options("real", width)
    for sample in samples:
        normals = normals_from_depth(sample["depth"], sample["meta"]["intrinsics"], **options)
        yield {**sample, "normals": normals}
