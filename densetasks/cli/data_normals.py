"""``densetasks data normals``: surface-normal labels from the depth of a folder dataset."""

import argparse
from pathlib import Path

import torch

from densetasks.data.folder import FolderDataset, register_tasks, write_label
from densetasks.data.geometry import normals_from_depth
from densetasks.errors import DataError

_CAMERA_FLAGS = ("fx", "fy", "cx", "cy")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "normals",
        help="compute normals/<name>.npy from depth/ and the camera intrinsics",
        description="For every image of a folder dataset that has depth, unproject the depth "
        "with the intrinsics, take cross products of neighbour differences averaged over "
        "four neighbour pairs (Lopes et al., WACV 2023, App. B.1.1), and write the unit normals "
        "(towards the camera; invalid near missing depth and on the border) into normals/.",
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    dataset = FolderDataset(args.root, split=args.split, tasks=["depth"])
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
        normals = normals_from_depth(
            sample["depth"], intrinsics, invalid_dilation=args.invalid_dilation
        )
        write_label(args.root, "normals", name, normals, args.file_format)
        written += 1
    if written:
        register_tasks(args.root, ["normals"])
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
