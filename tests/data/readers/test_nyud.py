"""The three NYUD-v2 layouts: ATRC/MTL-PyTorch folders, mtan .npy, the official .mat."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from densetasks.data.readers import NYUDLabelledMat, NYUDMultiTask, NYUDNpy
from densetasks.errors import DataError

H, W = 24, 32


def write_nyud_mt(root: Path, names: list[str]) -> None:
    for folder in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (root / folder).mkdir(parents=True)
    for name in names:
        Image.fromarray(np.full((H, W, 3), 200, np.uint8)).save(root / "images" / f"{name}.jpg")
        label = np.full((H, W), 5, np.uint8)
        label[0] = 0
        label[1] = 40
        Image.fromarray(label).save(root / "segmentation" / f"{name}.png")
        np.save(root / "depth" / f"{name}.npy", np.full((H, W), 2.0, np.float32))
        normals = np.zeros((H, W, 3), np.float32)
        normals[..., 2] = -1.0
        np.save(root / "normals" / f"{name}.npy", normals)
        edge = np.zeros((H, W), np.float32)
        edge[:, 3] = 1
        np.save(root / "edge" / f"{name}.npy", edge)
    (root / "gt_sets" / "train.txt").write_text("\n".join(names) + "\n")


def test_nyud_mt_layout(tmp_path):
    write_nyud_mt(tmp_path, ["0001", "0002"])
    dataset = NYUDMultiTask(tmp_path, "train")
    sample = dataset[0]
    assert len(dataset) == 2 and dataset.task_options["semseg"]["num_classes"] == 40
    assert (
        sample["semseg"][0, 0] == 255
        and sample["semseg"][1, 0] == 39
        and sample["semseg"][5, 5] == 4
    )
    assert sample["depth"].shape == (1, H, W) and sample["depth"].unique().tolist() == [2.0]
    assert torch.equal(sample["normals"][:, 3, 3], torch.tensor([0.0, 0.0, -1.0]))
    assert sample["edges"].dtype == torch.uint8 and sample["edges"][:, 3].tolist() == [1] * H
    assert sample["meta"]["intrinsics"][0, 0].item() == pytest.approx(518.86 * W / 640)


def test_nyud_mt_normals_signs_and_from_depth(tmp_path):
    write_nyud_mt(tmp_path, ["0001"])
    flipped = NYUDMultiTask(tmp_path, "train", normals_signs=(1, -1, -1))[0]["normals"]
    assert torch.equal(flipped[:, 3, 3], torch.tensor([0.0, 0.0, 1.0]))
    derived = NYUDMultiTask(tmp_path, "train", normals_from_depth=True, crop_origin=(45, 41))[0]
    assert torch.allclose(derived["normals"][:, 10, 10], torch.tensor([0.0, 0.0, -1.0]), atol=1e-5)
    assert derived["meta"]["intrinsics"][0, 2].item() == pytest.approx(325.58 - 41)


def test_nyud_mt_missing_depth_and_rgb_label_are_errors(tmp_path):
    write_nyud_mt(tmp_path, ["0001", "0002"])
    (tmp_path / "depth" / "0002.npy").unlink()
    with pytest.raises(DataError, match="1 of 2 depth files are missing"):
        NYUDMultiTask(tmp_path, "train")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "segmentation" / "0001.png")
    with pytest.raises(DataError, match="0001.png: expected a single-channel PNG"):
        NYUDMultiTask(tmp_path, "train", tasks=["semseg"]).load(0)


def write_nyud_npy(root: Path, count: int) -> None:
    for index in range(count):
        for folder, array in (
            ("image", np.full((H, W, 3), 0.5)),
            ("label", np.where(np.arange(W) < 4, -1.0, 12.0) * np.ones((H, 1))),
            ("depth", np.full((H, W, 1), 3.0)),
            ("normal", np.tile(np.array([0.0, 0.6, 0.8]), (H, W, 1))),
        ):
            (root / "train" / folder).mkdir(parents=True, exist_ok=True)
            np.save(root / "train" / folder / f"{index}.npy", array.astype(np.float32))


def test_nyud_npy_layout(tmp_path):
    write_nyud_npy(tmp_path, 3)
    dataset = NYUDNpy(tmp_path, "train")
    sample = dataset[2]
    assert dataset.names == ["0", "1", "2"] and sample["meta"]["name"] == "2"
    assert torch.allclose(sample["image"], torch.full((3, H, W), 0.5))
    assert sample["semseg"][0, 0] == 255 and sample["semseg"][0, 5] == 12
    assert sample["depth"].shape == (1, H, W)
    assert torch.allclose(sample["normals"][:, 0, 0], torch.tensor([0.0, 0.6, 0.8]))


def test_nyud_npy_count_mismatch_and_bad_label(tmp_path):
    write_nyud_npy(tmp_path, 2)
    np.save(tmp_path / "train" / "depth" / "7.npy", np.zeros((H, W), np.float32))
    with pytest.raises(DataError, match="1 more files than images"):
        NYUDNpy(tmp_path, "train")
    (tmp_path / "train" / "depth" / "7.npy").unlink()
    np.save(tmp_path / "train" / "label" / "0.npy", np.full((H, W), 13.0, np.float32))
    with pytest.raises(DataError, match="-1..12"):
        NYUDNpy(tmp_path, "train").load(0)


def write_nyud_mat(root: Path) -> None:
    """Two 24x32 frames stored as MATLAB v7.3 does (transposed: [N, 3, W, H], [N, W, H])."""
    labels = np.zeros((2, H, W), np.uint16)
    labels[:, :, 10:] = 3
    labels[1, :, 20:] = 2
    instances = (labels > 0).astype(np.uint8)
    images = np.zeros((2, H, W, 3), np.uint8)
    images[..., 0] = 255
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "w") as handle:
        handle["images"] = images.transpose(0, 3, 2, 1)
        handle["labels"] = labels.transpose(0, 2, 1)
        handle["instances"] = instances.transpose(0, 2, 1)
        handle["depths"] = np.full((2, W, H), 2.5, np.float32)
    # raw classes 1, 2, 3 -> 40-class 5, 1, 40; 40-class -> 13-class: 1->12, 5->4, 40->7
    scipy.io.savemat(root / "classMapping40.mat", {"mapClass": np.array([[5, 1, 40]])})
    to_13 = np.zeros((1, 40))
    to_13[0, [0, 4, 39]] = [12, 4, 7]
    struct = np.empty((1, 1), dtype=[("mapping", "O")])
    struct[0, 0]["mapping"] = to_13
    scipy.io.savemat(root / "class13Mapping.mat", {"classMapping13": struct})
    scipy.io.savemat(
        root / "splits.mat", {"trainNdxs": np.array([[2]]), "testNdxs": np.array([[1]])}
    )


def test_nyud_mat_transposed_frames_and_mappings(tmp_path):
    write_nyud_mat(tmp_path)
    dataset = NYUDLabelledMat(tmp_path, "train")
    sample = dataset[0]
    assert len(dataset) == 1 and sample["meta"]["name"] == "0002"
    assert sample["image"].shape == (3, H, W) and sample["image"][0].min() == 1.0
    assert (
        sample["semseg"][0, 0] == 255
        and sample["semseg"][0, 12] == 39
        and sample["semseg"][0, 25] == 0
    )
    assert sample["depth"].shape == (1, H, W)
    assert torch.allclose(sample["normals"][:, 10, 10], torch.tensor([0.0, 0.0, -1.0]), atol=1e-5)
    assert set(sample["instance"].unique().tolist()) == {0, 3 * 256 + 1, 2 * 256 + 1}
    thirteen = NYUDLabelledMat(tmp_path, "val", num_classes=13)[0]["semseg"]
    assert thirteen[0, 0] == 255 and thirteen[0, 12] == 6 and thirteen[0, 25] == 6
    assert len(NYUDLabelledMat(tmp_path, "all", tasks=["depth"])) == 2


def test_nyud_mat_errors(tmp_path):
    write_nyud_mat(tmp_path)
    (tmp_path / "classMapping40.mat").unlink()
    with pytest.raises(DataError, match="classMapping40.mat: file not found"):
        NYUDLabelledMat(tmp_path, "train")
    assert len(NYUDLabelledMat(tmp_path, "train", tasks=["depth"])) == 1
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat", "a") as handle:
        del handle["depths"]
    with pytest.raises(DataError, match="missing dataset"):
        NYUDLabelledMat(tmp_path, "train", tasks=["depth"])
