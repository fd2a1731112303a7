from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densetasks.data.readers import READERS
from densetasks.data.readers.camvid import CamVid
from densetasks.errors import ConfigError, DataError

REAL_COPY = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "camvid"


def write_camvid(root: Path, labels: dict[str, list[np.ndarray]]) -> None:
    """The SegNet layout: split folders, annot folders and pair lists with SegNet paths."""
    for split, maps in labels.items():
        lines = []
        for index, label in enumerate(maps):
            name = f"0001TP_{index:06d}.png"
            (root / split).mkdir(parents=True, exist_ok=True)
            (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
            image = np.full((*label.shape, 3), 40 * index, dtype=np.uint8)
            Image.fromarray(image).save(root / split / name)
            Image.fromarray(label.astype(np.uint8)).save(root / f"{split}annot" / name)
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")


def test_reads_classes_void_and_edges(tmp_path):
    label = np.zeros((24, 32), dtype=np.int64)
    label[:, 16:] = 3
    label[0, 0] = 11
    write_camvid(tmp_path, {"train": [label, label]})
    dataset = READERS.get("camvid")(tmp_path, split="train")
    sample = dataset[1]
    assert len(dataset) == 2 and sample["meta"]["name"] == "0001TP_000001"
    assert sample["image"].shape == (3, 24, 32)
    assert torch.allclose(sample["image"], torch.full((3, 24, 32), 40 / 255))
    assert sample["semseg"].dtype == torch.int64
    assert sample["semseg"][0, 0] == 255 and sample["semseg"][5, 20] == 3
    edges = sample["edges"]
    assert edges.dtype == torch.uint8
    assert edges[5, 15] == 1 and edges[5, 16] == 0 and edges[5, 10] == 0  # one side, 1 px
    assert edges[0, 0] == 255
    assert dataset.task_options["semseg"]["num_classes"] == 11


def test_label_value_above_void_is_an_error(tmp_path):
    write_camvid(tmp_path, {"train": [np.full((24, 32), 12)]})
    with pytest.raises(DataError, match="unexpected label values \\[12\\]"):
        CamVid(tmp_path, "train").load(0)


def test_rgb_label_png_is_an_error(tmp_path):
    write_camvid(tmp_path, {"train": [np.zeros((24, 32))]})
    path = tmp_path / "trainannot" / "0001TP_000000.png"
    Image.fromarray(np.zeros((24, 32, 3), dtype=np.uint8)).save(path)
    with pytest.raises(DataError, match="single-channel"):
        CamVid(tmp_path, "train").load(0)


def test_count_mismatch_and_missing_files_are_found_up_front(tmp_path):
    write_camvid(tmp_path, {"train": [np.zeros((24, 32))] * 2})
    Image.fromarray(np.zeros((24, 32), dtype=np.uint8)).save(tmp_path / "trainannot" / "extra.png")
    with pytest.raises(DataError, match="3 PNG files, but train.txt lists 2"):
        CamVid(tmp_path, "train")
    (tmp_path / "trainannot" / "extra.png").unlink()
    (tmp_path / "train" / "0001TP_000001.png").unlink()
    with pytest.raises(DataError, match="0001TP_000001.png not found"):
        CamVid(tmp_path, "train")
    with pytest.raises(DataError, match="val.txt: missing pair list"):
        CamVid(tmp_path, "val")
    with pytest.raises(ConfigError, match="splits"):
        CamVid(tmp_path, "extra")


@pytest.mark.skipif(not REAL_COPY.is_dir(), reason="the shared CamVid copy is absent")
def test_real_copy_counts_and_label_range():
    counts = {split: len(CamVid(REAL_COPY, split)) for split in ("train", "val", "test")}
    assert counts == {"train": 367, "val": 101, "test": 233}
    sample = CamVid(REAL_COPY, "val")[0]
    assert sample["image"].shape == (3, 180, 240)
    values = set(sample["semseg"].unique().tolist())
    assert values <= set(range(11)) | {255} and len(values) > 3
