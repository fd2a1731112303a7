import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densetasks.data.readers.cityscapes import (
    MAX_DEPTH,
    NOMINAL_BASELINE,
    NOMINAL_FX,
    Cityscapes,
    inverse_depth,
)
from densetasks.errors import DataError
from densetasks.tasks.registry import create_task

STEM = "aachen_000000_000019"
BASELINE, FX = 0.2, 100.0


def write_cityscapes(
    root: Path, label_ids: np.ndarray, instance_ids: np.ndarray, disparity: np.ndarray
) -> None:
    """One frame of the official layout (label ids 8-bit, instance ids and disparity 16-bit)."""
    city = "aachen"
    folders = {
        name: root / name / "train" / city
        for name in ("leftImg8bit", "gtFine", "disparity", "camera")
    }
    for folder in folders.values():
        folder.mkdir(parents=True)
    height, width = label_ids.shape
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(
        folders["leftImg8bit"] / f"{STEM}_leftImg8bit.png"
    )
    Image.fromarray(label_ids.astype(np.uint8)).save(
        folders["gtFine"] / f"{STEM}_gtFine_labelIds.png"
    )
    Image.fromarray(instance_ids.astype(np.uint16)).save(
        folders["gtFine"] / f"{STEM}_gtFine_instanceIds.png"
    )
    Image.fromarray(disparity.astype(np.uint16)).save(
        folders["disparity"] / f"{STEM}_disparity.png"
    )
    camera = {
        "extrinsic": {"baseline": BASELINE},
        "intrinsic": {"fx": FX, "fy": FX, "u0": 15.5, "v0": 11.5},
    }
    (folders["camera"] / f"{STEM}_camera.json").write_text(json.dumps(camera))


@pytest.fixture
def frame(tmp_path):
    label_ids = np.full((24, 32), 7)  # road
    label_ids[:, :8] = 26  # car
    label_ids[:4] = 0  # unlabeled
    label_ids[4:8, 8:12] = 22  # terrain
    instance_ids = np.where(label_ids == 26, 26001, label_ids)
    disparity = np.full((24, 32), 1 + 256 * 4)  # 4 px disparity
    disparity[0, 0] = 0
    write_cityscapes(tmp_path, label_ids, instance_ids, disparity)
    return tmp_path


def test_train_ids_depth_and_instances(frame):
    sample = Cityscapes(frame, "train")[0]
    assert sample["meta"]["name"] == STEM
    semseg = sample["semseg"]
    assert (
        semseg[10, 20] == 0 and semseg[10, 2] == 13 and semseg[0, 20] == 255 and semseg[5, 9] == 9
    )
    depth = sample["depth"]
    assert depth.shape == (1, 24, 32)
    assert depth[0, 10, 10].item() == pytest.approx(BASELINE * FX / 4)
    assert depth[0, 0, 0] == 0
    assert set(sample["instance"].unique().tolist()) == {0, 26001}
    assert torch.equal(sample["meta"]["intrinsics"][0], torch.tensor([FX, 0, 15.5]))


def test_sixteen_and_seven_class_sets(frame):
    sixteen = Cityscapes(frame, "train", num_classes=16, tasks=["semseg"])
    semseg = sixteen[0]["semseg"]
    assert semseg[5, 9] == 255  # terrain is not among the 16
    assert semseg[10, 2] == sixteen.task_options["semseg"]["class_names"].index("car") == 12
    seven = Cityscapes(frame, "train", num_classes=7, tasks=["semseg"])[0]["semseg"]
    assert seven[10, 20] == 0 and seven[10, 2] == 6 and seven[5, 9] == 3 and seven[0, 0] == 255


def test_tiny_resizes_labels_nearest_and_scales_intrinsics(frame):
    sample = Cityscapes(frame, "train", tiny=True, normals_from_depth=True)[0]
    assert sample["image"].shape == (3, 128, 256)
    assert set(sample["semseg"].unique().tolist()) <= {0, 9, 13, 255}
    assert sample["depth"].unique().tolist() == pytest.approx([0.0, BASELINE * FX / 4])
    assert sample["meta"]["intrinsics"][0, 0].item() == pytest.approx(FX * 8)
    normals = sample["normals"]
    assert normals.shape == (3, 128, 256)
    # a fronto-parallel wall faces the camera: (0, 0, -1)
    assert torch.allclose(normals[:, 64, 128], torch.tensor([0.0, 0.0, -1.0]), atol=1e-5)


def test_inverse_depth_matches_the_formula():
    raw = np.array([[0, 1, 257, 1 + 256 * 10]])
    assert inverse_depth(raw, 0.5, 2.0)[0].tolist() == pytest.approx([0, 0, 1.0, 10.0])


def test_8_bit_disparity_and_missing_files_are_errors(frame):
    path = frame / "disparity" / "train" / "aachen" / f"{STEM}_disparity.png"
    Image.fromarray(np.ones((24, 32), np.uint8)).save(path)
    with pytest.raises(DataError, match="16-bit"):
        Cityscapes(frame, "train").load(0)
    path.unlink()
    with pytest.raises(DataError, match="1 of 1 disparity files are missing"):
        Cityscapes(frame, "train")
    assert len(Cityscapes(frame, "train", tasks=["semseg"])) == 1


@pytest.fixture
def far_frame(tmp_path):
    """Raw disparities 0 and 1 (no match), 2 (1/256 px: 5120 m), 41 (5/32 px: 128 m) and
    1 + 256·4 (4 px: 5 m) with baseline · fx = 20 m · px."""
    label_ids = np.full((24, 32), 7)
    disparity = np.full((24, 32), 1 + 256 * 4)
    disparity[0, :4] = [0, 1, 2, 41]
    write_cityscapes(tmp_path, label_ids, label_ids, disparity)
    return tmp_path


def test_far_and_invalid_disparities_and_the_depth_task_options(far_frame):
    dataset = Cityscapes(far_frame, "train", tasks=["depth"])
    depth = dataset[0]["depth"][0]
    assert depth[0, :4].tolist() == pytest.approx([0.0, 0.0, 20.0 * 256, 20.0 * 256 / 40])
    assert depth[0, 4].item() == pytest.approx(5.0)
    options = dataset.task_options["depth"]
    assert options == {
        "max_depth": MAX_DEPTH,
        "disparity_scale": pytest.approx(NOMINAL_BASELINE * NOMINAL_FX),
    }
    tiny = Cityscapes(far_frame, "train", tasks=["depth"], tiny=True).task_options["depth"]
    assert tiny["disparity_scale"] == pytest.approx(NOMINAL_BASELINE * NOMINAL_FX / 8)
    assert "depth" not in Cityscapes(far_frame, "train", tasks=["semseg"]).task_options


def test_the_depth_task_built_from_the_reader_ignores_far_labels(far_frame):
    label = Cityscapes(far_frame, "train", tasks=["depth"])[0]["depth"][None]
    options = Cityscapes(far_frame, "train", tasks=["depth"]).task_options["depth"]
    task = create_task("depth", **options, primary_metric="disparity_mae")
    prediction = torch.full_like(label, 6.0)  # 1 m off on every 5 m pixel
    metric = task.metrics()
    metric.update(prediction, label)
    assert metric.compute()["rmse"] == pytest.approx(1.0)
    assert int(metric.count) == 24 * 32 - 4  # no match (2) and beyond 80 m (2) left out
    scale = NOMINAL_BASELINE * NOMINAL_FX
    assert metric.compute()["disparity_mae"] == pytest.approx(scale * (1 / 5 - 1 / 6))
    unlimited = create_task("depth", **{**options, "max_depth": None}).metrics()
    unlimited.update(prediction, label)
    assert unlimited.compute()["rmse"] > 100.0
