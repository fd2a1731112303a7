import argparse

import numpy as np
import pytest
import torch

from densetasks.cli import data_normals
from densetasks.data.folder import FolderDataset, write_folder_dataset
from densetasks.data.geometry import unproject
from densetasks.errors import DataError
from densetasks.tasks.registry import label_kinds

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
    write_folder_dataset(samples, tmp_path, "train", label_kinds())
    args = parse([str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "wrote 1 normal maps" in out and "skipped 1 images without depth" in out
    dataset = FolderDataset(tmp_path, "train", label_kinds=label_kinds())
    assert "normals" in dataset.tasks
    normals = dataset[0]["normals"]
    assert normals.shape == (3, H, W) and mean_angle_error_deg(normals) < 0.05
    assert np.load(tmp_path / "normals" / "a.npy").shape == (H, W, 3)


def test_camera_flags_and_png_output(tmp_path, capsys):
    write_folder_dataset([plane_sample("a", None)], tmp_path, "train", label_kinds())
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
    normals = FolderDataset(tmp_path, "train", tasks=["normals"], label_kinds=label_kinds())[0][
        "normals"
    ]
    assert mean_angle_error_deg(normals) < 1.0  # 8-bit quantisation


def test_missing_intrinsics_and_partial_flags_are_errors(tmp_path):
    write_folder_dataset([plane_sample("a", None)], tmp_path, "train", label_kinds())
    args = parse([str(tmp_path)])
    with pytest.raises(DataError, match=r"'a' has no intrinsics.*--fx --fy --cx --cy"):
        args.func(args)
    args = parse([str(tmp_path), "--fx", "18"])
    with pytest.raises(DataError, match=r"missing --fy, --cx, --cy"):
        args.func(args)


NOISY_H, NOISY_W = 120, 160
NOISY_K = torch.tensor([[150.0, 0.0, 79.5], [0.0, 150.0, 59.5], [0.0, 0.0, 1.0]])


def noisy_plane_sample(name: str, semseg: torch.Tensor | None = None) -> dict:
    """The plane as a Kinect-like sensor sees it: disparity f·b/z (f = 150 px, b = 7.5 cm)
    rounded to 1/8 px, and a 20 x 30 hole."""
    rays = unproject(torch.ones(1, NOISY_H, NOISY_W), NOISY_K).double()
    exact = -2.0 / (PLANE_NORMAL[:, None, None].double() * rays).sum(0)
    focal_baseline = 150.0 * 0.075
    disparity = torch.round(focal_baseline / exact * 8) / 8
    depth = (focal_baseline / disparity).float()[None]
    depth[0, 50:70, 60:90] = 0.0
    meta = {"name": name, "intrinsics": NOISY_K}
    sample = {"image": torch.rand(3, NOISY_H, NOISY_W), "depth": depth, "meta": meta}
    if semseg is not None:
        sample["semseg"] = semseg
    return sample


def write_noisy_plane(root, semseg: torch.Tensor | None = None) -> None:
    options = {"semseg": {"num_classes": 2, "class_names": ["floor", "thing"]}}
    write_folder_dataset(
        [noisy_plane_sample("a", semseg)], root, "train", label_kinds(), task_options=options
    )


def computed_normals(root, flags: list[str]) -> torch.Tensor:
    args = parse([str(root), *flags])
    assert args.func(args) == 0
    return FolderDataset(root, "train", tasks=["normals"], label_kinds=label_kinds())[0]["normals"]


def test_real_preset_flags_on_a_noisy_plane(tmp_path):
    write_noisy_plane(tmp_path)
    raw = computed_normals(tmp_path, [])
    assert mean_angle_error_deg(raw) > 10.0
    real = computed_normals(tmp_path, ["--preset", "real", "--smoothing", "30"])
    hole = torch.zeros(NOISY_H, NOISY_W, dtype=torch.bool)
    hole[50:70, 60:90] = True
    assert torch.equal(real.norm(dim=0) > 0, ~hole)  # in-painted pixels: the ignore value
    assert mean_angle_error_deg(real) < 3.0
    labelled = computed_normals(tmp_path, ["--preset", "real", "--label-holes"])
    assert (labelled.norm(dim=0) > 0).all()  # windows clipped at the border
    no_inpaint = computed_normals(tmp_path, ["--preset", "real", "--no-inpaint"])
    assert not (no_inpaint[:, 50:70, 60:90].norm(dim=0) > 0).any()
    stencil = computed_normals(tmp_path, ["--inpaint", "--smoothing", "0", "--label-holes"])
    assert (stencil[:, 1:-1, 1:-1].norm(dim=0) > 0).all()


def test_flat_classes_by_name_or_id(tmp_path, capsys):
    semseg = torch.zeros(NOISY_H, NOISY_W, dtype=torch.int64)
    semseg[:, :4] = 1
    write_noisy_plane(tmp_path, semseg)
    for classes in ("floor", "0"):
        flags = ["--preset", "real", "--smoothing", "30", "--flat-classes", classes]
        normals = computed_normals(tmp_path, flags)
        floor = normals[:, :, 4:].reshape(3, -1)
        floor = floor[:, floor.norm(dim=0) > 0]  # not the in-painted hole
        assert torch.unique(floor, dim=1).shape[1] == 1
        assert torch.unique(normals[:, :, :4].reshape(3, -1), dim=1).shape[1] > 1
    args = parse([str(tmp_path), "--flat-classes", "floor,carpet"])
    with pytest.raises(DataError, match=r"unknown class 'carpet' \(class names: floor, thing\)"):
        args.func(args)
    args = parse([str(tmp_path), "--smoothing", "-3"])
    with pytest.raises(DataError, match="--smoothing must be >= 0"):
        args.func(args)
    args = parse([str(tmp_path), "--flat-angle", "2"])
    with pytest.raises(DataError, match=r"--flat-angle must be in \(0, pi/2\)"):
        args.func(args)


def test_flat_classes_need_semseg(tmp_path):
    write_folder_dataset([plane_sample("a", K)], tmp_path, "train", label_kinds())
    args = parse([str(tmp_path), "--flat-classes", "0"])
    with pytest.raises(DataError, match="semseg"):
        args.func(args)
