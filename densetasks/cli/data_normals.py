"""``densetasks data normals``: surface-normal labels from the depth of a folder dataset."""

import argparse
import math
from pathlib import Path

import torch

from densetasks.data.folder import FolderDataset, register_tasks, write_label
from densetasks.data.geometry import (
    NORMALS_PRESETS,
    PRESET_WIDTH,
    normals_from_depth,
    preset_options,
)
from densetasks.errors import DataError
from densetasks.tasks.registry import label_kinds

_CAMERA_FLAGS = ("fx", "fy", "cx", "cy")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "normals",
        help="compute normals/<name>.npy from depth/ and the camera intrinsics",
        description="For every image of a folder dataset that has depth, unproject the depth "
        "with the intrinsics, take cross products of neighbour differences averaged over "
        "four neighbour pairs (Lopes et al., WACV 2023, App. B.1.1), and write the unit normals "
        "(towards the camera; invalid near missing depth and on the border) into normals/. "
        "For real (noisy, holed) depth use --preset real: in-paint holes, then fit local planes "
        "in edge-aware windows (Hickson et al., network fission, supplementary Sec. 2.2); "
        "pixels whose depth was in-painted are written invalid (the zero vector, which "
        "training and metrics ignore) unless --label-holes; --flat-classes adds their "
        "'floors are flat' step.",
    )
    parser.add_argument("root", type=Path, help="folder dataset")
    parser.add_argument("--split", default=None, help="only this split (default: every image)")
    for flag in _CAMERA_FLAGS:
        parser.add_argument(
            f"--{flag}",
            type=float,
            default=None,
            help=f"{flag} in pixels at the stored image size (give all four, or none to use "
            "the dataset's intrinsics files)",
        )
    parser.add_argument(
        "--format",
        dest="file_format",
        choices=("npy", "png"),
        default="npy",
        help="npy: exact float vectors (default); png: 8-bit RGB",
    )
    parser.add_argument(
        "--invalid-dilation",
        type=int,
        default=1,
        help="pixels masked around missing depth (default 1, the least that is correct)",
    )
    _add_real_depth_flags(parser)
    parser.set_defaults(func=run)


def _add_real_depth_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of the real-depth options of ``normals_from_depth`` (default: the preset's)."""
    parser.add_argument(
        "--preset",
        choices=tuple(NORMALS_PRESETS),
        default="synthetic",
        help="synthetic: exact depth, neighbour differences (default); real: --inpaint "
        f"--smoothing 30 x width / {PRESET_WIDTH} (the authors' 30 px for 640x480 Kinect depth)",
    )
    parser.add_argument(
        "--inpaint",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fill missing depth by harmonic in-painting of inverse depth before computing "
        "normals (default: preset)",
    )
    parser.add_argument(
        "--label-holes",
        action="store_true",
        help="with --inpaint, also write normals where depth was in-painted (default: the "
        "zero vector there, the ignore value: an in-painted surface is a guess)",
    )
    parser.add_argument(
        "--smoothing",
        type=int,
        default=None,
        help="largest edge-aware plane-fit window in pixels, 0 = neighbour differences "
        "(default: preset)",
    )
    parser.add_argument(
        "--max-depth-change",
        type=float,
        default=0.02,
        help="windows stop at depth changes above 2 * F * (z + 1 m) (PCL's factor, default 0.02)",
    )
    parser.add_argument(
        "--flat-classes",
        default=None,
        help="comma-separated semseg class ids or names that are flat (floor, wall, ...): "
        "each planar region of theirs gets its mean normal (needs semseg/)",
    )
    parser.add_argument(
        "--flat-angle",
        type=float,
        default=0.4,
        help="radians: a flat region takes the normals within this angle of its mean "
        "(default 0.4, the supplementary's planar threshold)",
    )


def run(args: argparse.Namespace) -> int:
    flat = args.flat_classes is not None
    kinds = label_kinds()
    dataset = FolderDataset(
        args.root,
        split=args.split,
        tasks=["depth", "semseg"] if flat else ["depth"],
        label_kinds=kinds,
    )
    flat_classes = _flat_classes(args, dataset)
    camera = _camera_from_flags(args)
    written = without_depth = 0
    for index in range(len(dataset)):
        sample = dataset.load(index)
        name = sample["meta"]["name"]
        if "depth" not in sample:
            without_depth += 1
            continue
        intrinsics = camera if camera is not None else sample["meta"].get("intrinsics")
        if intrinsics is None:
            raise DataError(
                f"{args.root}: image {name!r} has no intrinsics (intrinsics/{name}.json or "
                "intrinsics.json); pass --fx --fy --cx --cy"
            )
        if flat and "semseg" not in sample:
            raise DataError(f"{args.root}: image {name!r} has no semseg label for --flat-classes")
        normals = normals_from_depth(
            sample["depth"],
            intrinsics,
            invalid_dilation=args.invalid_dilation,
            semseg=sample.get("semseg"),
            flat_classes=flat_classes,
            **_normals_options(args, sample["depth"].shape[-1]),
        )
        write_label(args.root, "normals", name, normals, kinds, args.file_format)
        written += 1
    if written:
        register_tasks(args.root, ["normals"], kinds)
    print(f"wrote {written} normal maps to {args.root / 'normals'}")
    if without_depth:
        print(f"skipped {without_depth} images without depth")
    return 0


def _camera_from_flags(args: argparse.Namespace) -> torch.Tensor | None:
    values = {flag: getattr(args, flag) for flag in _CAMERA_FLAGS}
    given = [flag for flag, value in values.items() if value is not None]
    if not given:
        return None
    if len(given) != len(_CAMERA_FLAGS):
        missing = ", ".join(f"--{flag}" for flag in _CAMERA_FLAGS if flag not in given)
        raise DataError(f"camera flags must be given together; missing {missing}")
    return torch.tensor(
        [[values["fx"], 0.0, values["cx"]], [0.0, values["fy"], values["cy"]], [0.0, 0.0, 1.0]]
    )


def _normals_options(args: argparse.Namespace, width: int) -> dict:
    """The real-depth keyword arguments of ``normals_from_depth`` for an image ``width``
    pixels wide: the preset's (window scaled to the width), then the flags."""
    options = preset_options(args.preset, width)
    if args.inpaint is not None:
        options["inpaint"] = args.inpaint
    if args.smoothing is not None:
        options["smoothing"] = args.smoothing
    options["label_holes"] = args.label_holes
    options["max_depth_change"] = args.max_depth_change
    options["flat_angle"] = args.flat_angle
    return options


def _flat_classes(args: argparse.Namespace, dataset: FolderDataset) -> list[int]:
    """``--flat-classes`` as class ids; the flags checked before any image is read."""
    if args.smoothing is not None and args.smoothing < 0:
        raise DataError(f"--smoothing must be >= 0 pixels, got {args.smoothing}")
    if not 0.0 < args.flat_angle < math.pi / 2:
        raise DataError(f"--flat-angle must be in (0, pi/2) radians, got {args.flat_angle}")
    if args.flat_classes is None:
        return []
    names = dataset.task_options.get("semseg", {}).get("class_names", [])
    return _class_ids(args.flat_classes, names)


def _class_ids(text: str, names: list[str]) -> list[int]:
    """Class ids from ``"0,wall,2"``: integers as they are, names looked up in ``names``."""
    ids = []
    for token in (part.strip() for part in text.split(",")):
        if token.isdigit():
            ids.append(int(token))
        elif token in names:
            ids.append(names.index(token))
        else:
            known = ", ".join(names) or "none in dataset.json"
            raise DataError(f"--flat-classes: unknown class {token!r} (class names: {known})")
    return ids
