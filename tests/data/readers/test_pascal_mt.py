from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from densetasks.data.readers.pascal_mt import PascalMultiTask, edges_from_label_map, thin
from densetasks.errors import DataError

H, W = 24, 32


def person(mask: np.ndarray, parts: list[tuple[str, np.ndarray]]) -> tuple:
    part_array = np.empty((1, len(parts)), dtype=[("part_name", "O"), ("mask", "O")])
    for index, (name, part_mask) in enumerate(parts):
        part_array[0, index] = (name, part_mask.astype(np.uint8))
    return ("person", 15, mask.astype(np.uint8), part_array)


def write_parts(path: Path, objects: list[tuple]) -> None:
    """A Pascal-Part ``anno`` struct: imname and a struct array of objects."""
    array = np.empty(
        (1, len(objects)), dtype=[("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]
    )
    for index, obj in enumerate(objects):
        array[0, index] = obj
    scipy.io.savemat(path, {"anno": {"imname": path.stem, "objects": array}})


def write_pascal(root: Path, names: list[str]) -> None:
    for folder in (
        "JPEGImages",
        "semseg/pascal-context",
        "human_parts",
        "normals_distill",
        "sal_distill",
        "pascal-context/trainval",
        "ImageSets/Context",
    ):
        (root / folder).mkdir(parents=True)
    for name in names:
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        semseg = np.full((H, W), 15, np.uint8)
        semseg[0] = 255
        Image.fromarray(semseg).save(root / "semseg/pascal-context" / f"{name}.png")
        Image.fromarray(np.tile(np.array([128, 128, 255], np.uint8), (H, W, 1))).save(
            root / "normals_distill" / f"{name}.png"
        )
        saliency = np.zeros((H, W), np.uint8)
        saliency[:, :10] = 200
        saliency[:, 10:12] = 120
        Image.fromarray(saliency).save(root / "sal_distill" / f"{name}.png")
        label_map = np.zeros((H, W), np.uint16)
        label_map[:, 16:] = 7
        scipy.io.savemat(root / "pascal-context/trainval" / f"{name}.mat", {"LabelMap": label_map})
    head, arm, body, other = (np.zeros((H, W), bool) for _ in range(4))
    head[2:6, 2:6] = arm[8:12, 2:4] = True
    body[:, :8] = True
    other[:, 20:24] = True
    write_parts(root / "human_parts" / f"{names[0]}.mat", [
        person(body, [("head", head), ("llarm", arm)]),
        ("cat", 8, other.astype(np.uint8), np.empty((0, 0))),
        person(other, []),
    ])  # fmt: skip
    (root / "ImageSets/Context/train.txt").write_text("\n".join(names) + "\n")


def test_all_five_tasks(tmp_path):
    write_pascal(tmp_path, ["2008_000002", "2008_000003"])
    dataset = PascalMultiTask(tmp_path, "train")
    sample = dataset[0]
    assert sample["semseg"][0, 0] == 255 and sample["semseg"][5, 5] == 15
    parts = sample["parts"]
    assert parts[3, 3] == 1 and parts[9, 3] == 4 and parts[20, 5] == 0
    assert parts[5, 21] == 255  # a person without part annotations is ignored
    assert parts[5, 12] == 0
    assert torch.allclose(sample["normals"][:, 0, 0], torch.tensor([0.0, 0.0, 1.0]), atol=0.01)
    assert sample["saliency"][0].tolist()[:12] == [1] * 10 + [0, 0]
    assert sample["edges"].sum(dim=1).tolist() == [1] * H  # one thin vertical line
    assert "parts" not in dataset[1]  # no human_parts file: not supervised


def test_label_map_edges_and_thinning():
    label_map = np.zeros((6, 8), int)
    label_map[:, 4:] = 2
    edges = edges_from_label_map(label_map)
    assert edges.sum().item() == 6 and set(edges.nonzero()[:, 1].tolist()) <= {3, 4}
    square = np.zeros((7, 7), bool)
    square[1:6, 2:5] = True
    assert thin(square).sum() < square.sum() and thin(square)[3, 3]


def test_missing_normals_and_bad_semseg_values(tmp_path):
    write_pascal(tmp_path, ["a", "b"])
    (tmp_path / "normals_distill" / "b.png").unlink()
    with pytest.raises(DataError, match="1 of 2 normals files are missing"):
        PascalMultiTask(tmp_path, "train")
    Image.fromarray(np.full((H, W), 30, np.uint8)).save(tmp_path / "semseg/pascal-context/a.png")
    with pytest.raises(DataError, match="unexpected label values \\[30\\]"):
        PascalMultiTask(tmp_path, "train", tasks=["semseg"]).load(0)
