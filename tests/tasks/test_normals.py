import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from densetasks.data.folder import FolderDataset, write_folder_dataset
from densetasks.data.geometry import normals_from_depth, preset_options, unproject
from densetasks.data.sample import LabelKind
from densetasks.data.transforms import hflip
from densetasks.metrics.normals import NormalsMetrics
from densetasks.pictures import ICON, IconKey
from densetasks.tasks.normals import SurfaceNormals
from densetasks.tasks.registry import label_kinds


def column(*vectors):
    """Vectors -> a ``[1, 3, len(vectors), 1]`` tensor (one pixel per vector)."""
    return torch.tensor(vectors, dtype=torch.float32).T[None, :, :, None]


def test_one_minus_cosine_by_hand_ignores_zero_labels():
    label = column((0, 0, 1), (0, 0, 1), (0, 0, 1), (0, 0, 1), (0, 0, 0))
    output = column((0, 0, 2), (1, 0, 0), (0, 0, -1), (1, 0, 1), (5, 5, 5))
    expected = (0.0 + 1.0 + 2.0 + (1 - 1 / math.sqrt(2))) / 4
    assert SurfaceNormals().loss(output, label).item() == pytest.approx(expected, rel=1e-6)


def test_mask_gradients_and_empty_batches():
    task = SurfaceNormals()
    label = F.normalize(torch.randn(2, 3, 4, 4), dim=1)
    output = torch.randn(2, 3, 4, 4, requires_grad=True)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, :, :1] = True
    task.loss(output, label, mask).backward()
    assert torch.isfinite(output.grad).all()
    assert output.grad[..., :1].abs().sum() > 0 and output.grad[..., 1:].abs().sum() == 0
    empty = output.detach().clone().requires_grad_(True)
    zero = task.loss(empty, torch.zeros_like(label))
    zero.backward()
    assert zero.item() == 0.0 and empty.grad is not None
    with pytest.raises(ValueError, match="B, 3, H, W"):
        task.loss(torch.zeros(2, 1, 4, 4), label)


def test_task_contract_decode_and_composite_identity():
    task = SurfaceNormals()
    assert task.name == "normals" and task.label_kind is LabelKind.NORMALS
    assert task.channels == 3 and task.primary_metric == "mean" and task.options() == {}
    assert isinstance(task.metrics(), NormalsMetrics)
    assert not task.metrics().higher_is_better["mean"]
    decoded = task.decode(torch.randn(2, 3, 5, 5) * 7)
    assert decoded.shape == (2, 3, 5, 5)
    assert torch.allclose(decoded.norm(dim=1), torch.ones(2, 5, 5))
    label = F.normalize(torch.randn(2, 3, 5, 5), dim=1)
    label[0, :, 0, 0] = 0
    round_trip = task.decode(task.from_composite(task.to_composite(label)))
    assert torch.allclose(round_trip, label, atol=1e-6)


def test_visualize_colours_and_black_unlabelled():
    image = SurfaceNormals().visualize(column((0, 0, 1), (-1, 0, 0), (0, 0, 0))[0])
    assert image.shape == (3, 1, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [128, 128, 255]
    assert image[1, 0].tolist() == [0, 128, 128]
    assert image[2, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("file_format", ["npy", "png"])
def test_normals_of_inpainted_depth_are_ignored_by_loss_and_metrics(tmp_path, file_format):
    # Labels made with the real-depth preset carry the zero vector (the ignore value) where
    # depth was in-painted; written, read back and flipped, the loss and the metrics must not
    # see those pixels: a prediction that is right on measured pixels and wrong in the hole
    # scores perfectly.
    intrinsics = torch.tensor([[30.0, 0.0, 19.5], [0.0, 30.0, 15.5], [0.0, 0.0, 1.0]])
    plane = F.normalize(torch.tensor([0.2, -0.3, -1.0]), dim=0)
    rays = unproject(torch.ones(1, 32, 40), intrinsics)
    depth = (-2.0 / (plane[:, None, None] * rays).sum(0))[None]
    depth[0, 10:20, 12:26] = 0.0
    label = normals_from_depth(depth, intrinsics, **preset_options("real", 40))
    sample = {"image": torch.rand(3, 32, 40), "normals": label, "meta": {"name": "a"}}
    write_folder_dataset(
        [sample], tmp_path, "train", label_kinds(), formats={"normals": file_format}
    )
    dataset = FolderDataset(tmp_path, "train", tasks=["normals"], label_kinds=label_kinds())
    label = hflip(dataset[0], label_kinds())["normals"][None]
    hole = torch.zeros(1, 32, 40, dtype=torch.bool)
    hole[0, 10:20, 14:28] = True  # the hole, flipped
    assert torch.equal(LabelKind.NORMALS.valid(label), ~hole)
    output = torch.where(hole[:, None], torch.tensor([1.0, 0.0, 0.0])[:, None, None], label)
    task = SurfaceNormals()
    assert task.loss(output, label).item() == pytest.approx(0.0, abs=1e-6)
    metrics = task.metrics()
    metrics.update(output, label)
    assert metrics.compute()["mean"] == pytest.approx(0.0, abs=1e-3)
    assert int(metrics.count) == 32 * 40 - 10 * 14


def test_the_key_is_a_sphere_coloured_as_the_surfaces_facing_each_way():
    """Pixel (row, col) of the icon shows the sphere's normal there, (u, v, -sqrt(1 - u² - v²))
    with u, v the pixel centre in [-1, 1]: the centre faces the camera, the left rim left
    (-x), the top rim up (-y), each drawn as a surface facing that way."""
    task = SurfaceNormals()
    key = task.picture_key(torch.zeros(3, 4, 4))
    assert isinstance(key, IconKey) and key.icon.shape == (ICON, ICON, 3) and key.text
    for row, col in [(ICON // 2, ICON // 2), (ICON // 2, 1), (1, ICON // 2), (9, 25)]:
        u, v = ((col + 0.5) / ICON * 2 - 1), ((row + 0.5) / ICON * 2 - 1)
        normal = torch.tensor([u, v, -math.sqrt(1 - u * u - v * v)]).reshape(3, 1, 1)
        np.testing.assert_array_equal(key.icon[row, col], task.visualize(normal)[0, 0])
    centre, left, top = (
        key.icon[ICON // 2, ICON // 2],
        key.icon[ICON // 2, 1],
        key.icon[1, ICON // 2],
    )
    assert centre[2] < 10 and left[0] < 20 and top[1] < 20  # -z, -x, -y
    assert (key.icon[0, 0] == 255).all()  # white around the sphere
