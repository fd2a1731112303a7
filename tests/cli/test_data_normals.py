import argparse

import numpy as np
import pytest
import torch

from densetasks.cli import data_normals
from densetasks.data.folder import FolderDataset, write_folder_dataset
from densetasks.data.geometry import unproject
from densetasks.errors import DataError

H, W = 16, 20
K = torch.tensor([[18.0, 0.0, 9.5], [0.0, 18.0, 7.5], [0.0, 0.0, 1.0]])
PLANE_NORMAL = torch.nn.functional.normalize(torch.tensor([0.3, -0.4, -1.0]), dim=0)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    data_normals.add_parser(parser.add_subparsers())
    return parser.parse_args(["normals", *argv])


def plane_sample(name: str, intrinsics: torch.Tensor | None) -> dict:
    rays = unproject(torch.ones(1, H, W), K)
    depth = (-2.0 / (PLANE_NORMAL[:, None, None] * rays).sum(0))[None]
    meta = {"name": name} if intrinsics is None else {"name": name, "intrinsics": intrinsics}
    return {"image": torch.rand(3, H, W), "depth": depth, "meta": meta}


def mean_angle_error_deg(normals: torch.Tensor) -> float:
    valid = normals.norm(dim=0) > 0
    cosine = (normals[:, valid] * PLANE_NORMAL[:, None]).sum(0).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cosine)).mean().item()


def test_writes_normals_from_depth_with_dataset_intrinsics(tmp_path, capsys):
    samples = [plane_sample("a", K), {"image": torch.rand(3, H, W), "meta": {"name": "b"}}]
    write_folder_dataset(samples, tmp_path, "train")
    args = parse([str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "wrote 1 normal maps" in out and "skipped 1 images without depth" in out
    dataset = FolderDataset(tmp_path, "train")
    assert "normals" in dataset.tasks
    normals = dataset[0]["normals"]
    assert normals.shape == (3, H, W) and mean_angle_error_deg(normals) < 0.05
    assert np.load(tmp_path / "normals" / "a.npy").shape == (H, W, 3)


def test_camera_flags_and_png_output(tmp_path, capsys):
    write_folder_dataset([plane_sample("a", None)], tmp_path, "train")
    args = parse(
        [
            str(tmp_path),
            "--split",
            "train",
            "--fx",
            "18",
            "--fy",
            "18",
            "--cx",
            "9.5",
            "--cy",
            "7.5",
            "--format",
            "png",
        ]
    )
    assert args.func(args) == 0
    assert (tmp_path / "normals" / "a.png").is_file()
    normals = FolderDataset(tmp_path, "train", tasks=["normals"])[0]["normals"]
    assert mean_angle_error_deg(normals) < 1.0  # 8-bit quantisation


def test_missing_intrinsics_and_partial_flags_are_errors(tmp_path):
    write_folder_dataset([plane_sample("a", None)], tmp_path, "train")
    args = parse([str(tmp_path)])
    with pytest.raises(DataError, match=r"'a' has no intrinsics.*--fx --fy --cx --cy"):
        args.func(args)
    args = parse([str(tmp_path), "--fx", "18"])
    with pytest.raises(DataError, match=r"missing --fy, --cx, --cy"):
        args.func(args)
