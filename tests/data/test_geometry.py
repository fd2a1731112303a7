import math

import pytest
import torch

from densetasks.data.geometry import normals_from_depth, scale_intrinsics, unproject

HEIGHT, WIDTH = 40, 56
K = torch.tensor([[45.0, 0.0, 27.0], [0.0, 50.0, 19.5], [0.0, 0.0, 1.0]])


def plane_depth(normal: torch.Tensor, offset: float) -> torch.Tensor:
    """Depth of the plane n·p = offset seen through K (rays r, p = z·r)."""
    rays = unproject(torch.ones(1, HEIGHT, WIDTH), K)
    return (offset / (normal[:, None, None] * rays).sum(0))[None]


def angle_errors_deg(normals: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    valid = normals.norm(dim=0) > 0
    cosine = (normals[:, valid] * expected[:, None]).sum(0).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cosine))


def test_unproject_by_hand():
    depth = torch.full((1, HEIGHT, WIDTH), 2.0)
    points = unproject(depth, K)
    # pixel (row 0, column 0): x = 2 * (0 - 27) / 45, y = 2 * (0 - 19.5) / 50
    assert points[:, 0, 0].tolist() == pytest.approx([-1.2, -0.78, 2.0])
    assert points[:, 10, 37].tolist() == pytest.approx([2 * 10 / 45, 2 * -9.5 / 50, 2.0])


def test_fronto_parallel_wall_faces_camera():
    normals = normals_from_depth(torch.full((1, HEIGHT, WIDTH), 3.0), K)
    valid = normals.norm(dim=0) > 0
    assert valid[1:-1, 1:-1].all() and not valid[0].any() and not valid[:, -1].any()
    assert torch.allclose(normals[:, valid], torch.tensor([0.0, 0.0, -1.0])[:, None], atol=1e-6)


@pytest.mark.parametrize("tilt", [(0.3, -0.2), (-0.6, 0.4), (0.0, 0.8)])
def test_tilted_plane_mean_angle_error_is_zero(tilt):
    expected = torch.nn.functional.normalize(torch.tensor([tilt[0], tilt[1], -1.0]), dim=0)
    depth = plane_depth(expected, offset=-2.0)
    assert (depth > 0).all()
    normals = normals_from_depth(depth, K)
    errors = angle_errors_deg(normals, expected)
    assert errors.numel() == (HEIGHT - 2) * (WIDTH - 2)
    assert errors.mean() < 0.05 and errors.max() < 0.1
    points = unproject(depth, K)
    assert ((normals * points).sum(0) <= 0).all()  # oriented towards the camera


def test_invalid_holes_are_masked_with_dilation():
    depth = torch.full((1, HEIGHT, WIDTH), 2.0)
    depth[0, 20, 30] = 0.0
    normals = normals_from_depth(depth, K, invalid_dilation=2)
    valid = normals.norm(dim=0) > 0
    assert not valid[18:23, 28:33].any()
    assert valid[17, 30] and valid[20, 27] and valid[23, 33]
    mask = torch.ones(HEIGHT, WIDTH, dtype=torch.bool)
    mask[5, 5] = False
    from_mask = normals_from_depth(torch.full((1, HEIGHT, WIDTH), 2.0), K, valid=mask)
    valid = from_mask.norm(dim=0) > 0
    assert not valid[4:7, 4:7].any() and valid[7, 7] and valid[3, 3]


def test_rejects_bad_dilation_and_shapes():
    with pytest.raises(ValueError, match="invalid_dilation"):
        normals_from_depth(torch.ones(1, 8, 8), K, invalid_dilation=0)
    with pytest.raises(ValueError, match=r"\[1, H, W\]"):
        normals_from_depth(torch.ones(8, 8), K)


def test_scale_intrinsics_maps_pixel_centres():
    scaled = scale_intrinsics(K, (HEIGHT, WIDTH), (HEIGHT // 2, WIDTH * 2))
    assert scaled[0, 0] == pytest.approx(90.0) and scaled[1, 1] == pytest.approx(25.0)
    # The same 3-D point projects to the resized pixel position (u + 0.5) * s - 0.5.
    point = torch.tensor([0.3, -0.2, 2.0])
    u, v = (K @ point)[:2] / point[2]
    u2, v2 = (scaled @ point)[:2] / point[2]
    assert u2 == pytest.approx((u + 0.5) * 2 - 0.5)
    assert v2 == pytest.approx((v + 0.5) * 0.5 - 0.5)


def test_normals_do_not_change_under_resize_with_scaled_intrinsics():
    expected = torch.nn.functional.normalize(torch.tensor([0.4, 0.1, -1.0]), dim=0)
    small_k = scale_intrinsics(K, (HEIGHT, WIDTH), (20, 28))
    rays = unproject(torch.ones(1, 20, 28), small_k)
    depth = (-2.0 / (expected[:, None, None] * rays).sum(0))[None]
    errors = angle_errors_deg(normals_from_depth(depth, small_k), expected)
    assert errors.max() < 0.1 and not math.isnan(errors.mean().item())
