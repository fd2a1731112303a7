"""Task.resize_output: bilinear by default; instance offsets rescaled to the large grid's
pixels (checked against offsets known by hand); normals of unit length."""

import pytest
import torch
import torch.nn.functional as F

from densetasks.data.derive import centroid_offsets
from densetasks.tasks.base import Task
from densetasks.tasks.registry import TASKS, create_task

OPTIONS = {
    "semseg": {"num_classes": 5},
    "parts": {"num_classes": 3},
    "task_palette": {"tasks": ["semseg", "parts", "edges", "saliency", "normals"]},
}
OVERRIDING = {"instance", "normals"}
"""Tasks whose outputs are not plain bilinear-resizable values."""


def build(name: str) -> Task:
    return create_task(name, **OPTIONS.get(name, {}))


def output_for(name: str, size: tuple[int, int] = (4, 6)) -> torch.Tensor:
    return torch.randn(2, build(name).channels, *size, generator=torch.Generator().manual_seed(0))


def test_exactly_instance_and_normals_override_the_default() -> None:
    overriding = {
        name for name in TASKS.names() if TASKS.get(name).resize_output is not Task.resize_output
    }
    assert overriding == OVERRIDING


@pytest.mark.parametrize("name", sorted(set(TASKS.names()) - OVERRIDING))
def test_default_is_bilinear_without_aligned_corners(name: str) -> None:
    output = output_for(name)
    expected = F.interpolate(output, size=(16, 24), mode="bilinear", align_corners=False)
    assert torch.equal(build(name).resize_output(output, (16, 24)), expected)


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_gives_the_requested_size_and_keeps_the_graph(name: str) -> None:
    output = output_for(name).requires_grad_()
    resized = build(name).resize_output(output, (9, 13))
    assert resized.shape == (2, build(name).channels, 9, 13)
    resized.sum().backward()
    assert output.grad is not None and torch.isfinite(output.grad).all()
    with pytest.raises(ValueError, match=r"\[B, C, h, w\]"):
        build(name).resize_output(output[0].detach(), (9, 13))


def interior(small: int, large: int) -> slice:
    """The large-grid pixels whose bilinear taps (``align_corners=False``) all fall inside
    the small grid, so that no border clamping bends a linear ramp."""
    source = (torch.arange(large) + 0.5) * small / large - 0.5
    inside = ((source >= 0) & (source <= small - 1)).nonzero().flatten()
    return slice(int(inside[0]), int(inside[-1]) + 1)


def test_instance_offsets_at_quarter_resolution_by_hand() -> None:
    # A 8×16 instance at rows 4..11, columns 8..23 of a 16×32 image: centroid (15.5, 7.5).
    ids = torch.zeros(1, 16, 32, dtype=torch.int64)
    ids[0, 4:12, 8:24] = 3
    small_ids = ids[:, ::4, ::4]  # 4× down: rows 1..2, columns 2..5, centroid (3.5, 1.5)
    small, _ = centroid_offsets(small_ids)
    assert small[0, :, 1, 2].tolist() == [1.5, 0.5]  # pixel (x=2, y=1) -> (3.5, 1.5)

    resized = create_task("instance").resize_output(small, (16, 32))
    # Large pixel (x=11, y=6) reads small (x=2.375, y=1.125), inside the instance:
    # dx = 4 · (3.5 − 2.375) = 4.5 = 15.5 − 11, dy = 4 · (1.5 − 1.125) = 1.5 = 7.5 − 6.
    assert resized[0, :, 6, 11].tolist() == pytest.approx([4.5, 1.5])
    # Every large pixel whose taps are all instance pixels (small x in [2, 5], y in [1, 2]:
    # large x 10..21, y 6..9) has its exact large-grid offset.
    rows, columns = slice(6, 10), slice(10, 22)
    exact, _ = centroid_offsets(ids)
    assert torch.allclose(resized[..., rows, columns], exact[..., rows, columns], atol=1e-5)


@pytest.mark.parametrize("size", [(16, 32), (8, 32), (16, 16), (6, 10)])
def test_instance_offsets_scale_x_and_y_separately(size: tuple[int, int]) -> None:
    # One instance filling a 4×8 image: offsets are linear ramps, and a linear ramp resized
    # bilinearly is the ramp of the large grid away from the clamped borders.
    small, _ = centroid_offsets(torch.ones(1, 4, 8, dtype=torch.int64))
    resized = create_task("instance").resize_output(small, size)
    exact, _ = centroid_offsets(torch.ones(1, *size, dtype=torch.int64))
    rows, columns = interior(4, size[0]), interior(8, size[1])
    assert torch.allclose(resized[..., rows, columns], exact[..., rows, columns], atol=1e-5)
    # At the top-left corner the source clamps to small pixel (0, 0): offset (3.5, 1.5)
    # small pixels, i.e. (3.5 · W / 8, 1.5 · H / 4) large ones.
    corner = [3.5 * size[1] / 8, 1.5 * size[0] / 4]
    assert resized[0, :, 0, 0].tolist() == pytest.approx(corner)


def test_normals_are_unit_length_and_decode_as_plain_bilinear() -> None:
    task = create_task("normals")
    output = 5.0 * output_for("normals")
    resized = task.resize_output(output, (12, 18))
    norm = resized.norm(dim=1)
    assert torch.allclose(norm, torch.ones_like(norm), atol=1e-5)
    bilinear = F.interpolate(output, size=(12, 18), mode="bilinear", align_corners=False)
    assert torch.allclose(task.decode(resized), task.decode(bilinear), atol=1e-6)
    assert torch.allclose(resized, task.decode(bilinear), atol=1e-6)


def test_normals_zero_vectors_stay_zero() -> None:
    output = output_for("normals")
    output[:, :, 0, 0] = 0.0  # large pixel (0, 0) reads only small pixel (0, 0)
    resized = create_task("normals").resize_output(output, (12, 18))
    assert torch.equal(resized[:, :, 0, 0], torch.zeros(2, 3))
    assert torch.isfinite(resized).all()
