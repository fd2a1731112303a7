import math

import pytest
import torch

from densetasks.data.geometry import (
    NORMALS_PRESETS,
    flatten_flat_classes,
    inpaint_depth,
    normals_from_depth,
    preset_options,
    scale_intrinsics,
    unproject,
)

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


# An analytic noisy plane: the tilted plane n·p = -2 seen by a Kinect-like sensor of this
# image's focal length (f = 150 px), baseline b = 7.5 cm, disparity f·b / z rounded to 1/8 px,
# with 5 % random holes and a 10 x 15 block hole.
NOISY_H, NOISY_W = 120, 160
NOISY_K = torch.tensor([[150.0, 0.0, 79.5], [0.0, 150.0, 59.5], [0.0, 0.0, 1.0]])
NOISY_NORMAL = torch.nn.functional.normalize(torch.tensor([0.3, -0.5, -1.0]), dim=0)
FOCAL_BASELINE = 150.0 * 0.075


def exact_noisy_plane_depth() -> torch.Tensor:
    rays = unproject(torch.ones(1, NOISY_H, NOISY_W), NOISY_K).double()
    return (-2.0 / (NOISY_NORMAL[:, None, None].double() * rays).sum(0))[None]


def noisy_plane_depth() -> torch.Tensor:
    disparity = torch.round(FOCAL_BASELINE / exact_noisy_plane_depth() / 0.125) * 0.125
    depth = (FOCAL_BASELINE / disparity).float()
    holes = torch.rand(NOISY_H, NOISY_W, generator=torch.Generator().manual_seed(0)) < 0.05
    depth[0, holes] = 0.0
    depth[0, 50:60, 70:85] = 0.0
    return depth


def test_raw_normals_of_quantised_plane_are_tens_of_degrees_off():
    # The depth step z² / (8·f·b) is 1.6-5.8 cm here, larger than the true change between
    # neighbours (< 2 cm), so neighbour differences see flat treads and steep risers.
    errors = angle_errors_deg(normals_from_depth(noisy_plane_depth(), NOISY_K), NOISY_NORMAL)
    assert errors.mean() > 15.0


def test_real_preset_recovers_the_noisy_plane():
    # Hand bound: a least-squares slope over a window of half-width a (metres) with depth
    # errors of at most ε = step/2 is off by at most 1.5·ε/a; for the preset's 31 x 31 window
    # ε/a = z·(1/8) / (2·b·15) <= 0.2 at z <= 3.6 m, so tan(error) <= 0.3 per axis in the
    # worst case (all errors conspiring). Quantisation errors of a tilted plane do not
    # conspire: with independent errors of std ε/√3 over 961 points the expected error is
    # ~0.3°. We require a mean below 2° and a maximum below 10°, everywhere (holes in-painted).
    depth = noisy_plane_depth()
    labelled = normals_from_depth(depth, NOISY_K, **NORMALS_PRESETS["real"], label_holes=True)
    errors = angle_errors_deg(labelled, NOISY_NORMAL)
    assert errors.numel() == NOISY_H * NOISY_W
    assert errors.mean() < 2.0 and errors.max() < 10.0


def test_inpainted_pixels_get_the_ignore_value_unless_labelled():
    depth = noisy_plane_depth()
    measured = depth[0] > 0
    masked = normals_from_depth(depth, NOISY_K, **NORMALS_PRESETS["real"])
    labelled = normals_from_depth(depth, NOISY_K, **NORMALS_PRESETS["real"], label_holes=True)
    has_normal = masked.norm(dim=0) > 0
    assert torch.equal(has_normal, measured)  # every measured pixel, no in-painted one
    assert torch.equal(masked[:, measured], labelled[:, measured])
    raw = normals_from_depth(depth, NOISY_K, inpaint=True)  # the stencil alike
    assert not (raw[:, ~measured].norm(dim=0) > 0).any()
    assert (raw[:, 1:-1, 1:-1].norm(dim=0) > 0).sum() == measured[1:-1, 1:-1].sum()


def test_smoothing_without_inpainting_keeps_away_from_holes():
    # Speckle holes would shrink every window to a few pixels (PCL's behaviour too): the
    # reason to in-paint first. With the block hole only, windows stay away from it.
    disparity = torch.round(FOCAL_BASELINE / exact_noisy_plane_depth() / 0.125) * 0.125
    depth = (FOCAL_BASELINE / disparity).float()
    depth[0, 50:60, 70:85] = 0.0
    normals = normals_from_depth(depth, NOISY_K, smoothing=30)
    valid = normals.norm(dim=0) > 0
    assert not valid[48:62, 68:87].any()  # within distance 2 of a marked pixel: no window
    assert valid.float().mean() > 0.9
    assert angle_errors_deg(normals, NOISY_NORMAL).mean() < 3.0


def test_smoothing_windows_stop_at_depth_edges():
    # Two fronto-parallel walls (2 m left, 3 m right): a step of 1 m > 2·0.02·(2 m + 1 m).
    depth = torch.full((1, HEIGHT, WIDTH), 2.0)
    depth[0, :, WIDTH // 2 :] = 3.0
    normals = normals_from_depth(depth, K, smoothing=10)
    valid = normals.norm(dim=0) > 0
    assert not valid[:, WIDTH // 2 - 2 : WIDTH // 2 + 2].any()  # distance <= 2: no window
    errors = angle_errors_deg(normals, torch.tensor([0.0, 0.0, -1.0]))
    assert errors.max() < 1e-4  # no window mixes the two walls


def test_inpainting_fills_a_hole_inside_a_plane_exactly():
    # Inverse depth of a plane is affine in (u, v), and affine functions solve the discrete
    # Laplace equation, so the harmonic fill is the plane itself (up to float32 rounding).
    exact = exact_noisy_plane_depth().float()
    holed = exact.clone()
    holed[0, 50:60, 70:85] = 0.0
    holed[0, 5, 5] = 0.0
    mask = torch.ones(NOISY_H, NOISY_W, dtype=torch.bool)
    mask[100, 10:20] = False
    filled = inpaint_depth(holed, valid=mask)
    assert torch.allclose(filled, exact, rtol=1e-6, atol=0.0)
    assert torch.equal(inpaint_depth(torch.zeros(1, 4, 4)), torch.zeros(1, 4, 4))


def test_floors_are_flat_makes_a_noisy_floor_exactly_flat():
    # Every measured pixel of the noisy plane is within 0.4 rad of the mean: one region, one
    # normal, within 2° of the truth; in-painted pixels keep the ignore value.
    depth = noisy_plane_depth()
    normals = normals_from_depth(
        depth,
        NOISY_K,
        **NORMALS_PRESETS["real"],
        semseg=torch.zeros(NOISY_H, NOISY_W, dtype=torch.int64),
        flat_classes=[0],
    )
    measured = depth[0] > 0
    assert torch.unique(normals[:, measured], dim=1).shape[1] == 1
    assert not (normals[:, ~measured].norm(dim=0) > 0).any()
    assert angle_errors_deg(normals, NOISY_NORMAL).max() < 2.0


def test_floors_are_flat_keeps_the_walls_of_a_concave_corner_apart():
    # Two walls (columns < 32 face +x, columns >= 96 face -z) whose normals turn 90° in 64
    # steps in between, as smoothed normals do across a corner: every two neighbours are less
    # than 0.04 rad apart, so pairwise joining (the authors' union-find) makes one component
    # of both walls. Growing against the region's mean keeps them apart.
    angles = torch.linspace(0, math.pi / 2, 66)[1:-1]
    angles = torch.cat([torch.zeros(32), angles, torch.full((32,), math.pi / 2)])
    row = torch.stack([torch.cos(angles), torch.zeros(128), -torch.sin(angles)])
    noise = 0.002 * torch.randn(3, 24, 128, generator=torch.Generator().manual_seed(2))
    normals = torch.nn.functional.normalize(row[:, None, :] + noise, dim=0)
    neighbour_cosine = (normals[:, :, 1:] * normals[:, :, :-1]).sum(0)
    assert neighbour_cosine.min() > math.cos(0.04)  # the chaining witness
    flattened = flatten_flat_classes(normals, torch.zeros(24, 128, dtype=torch.int64), [0])
    left, right = flattened[:, :, :32].reshape(3, -1), flattened[:, :, 96:].reshape(3, -1)
    assert torch.unique(left, dim=1).shape[1] == 1 and torch.unique(right, dim=1).shape[1] == 1
    assert angle_errors_deg(left[:, :1], torch.tensor([1.0, 0.0, 0.0])).item() < 10.0
    assert angle_errors_deg(right[:, :1], torch.tensor([0.0, 0.0, -1.0])).item() < 10.0
    moved = (flattened * normals).sum(0).clamp(-1, 1).acos()
    assert moved.max() < 0.4  # no pixel moves by the kernel's radius or more


def corner_rays() -> torch.Tensor:
    return unproject(torch.ones(1, NOISY_H, NOISY_W), NOISY_K).double()


def corner_depth() -> torch.Tensor:
    """Kinect-quantised depth of a room corner seen from inside: the wall x = 0.8 m (normal
    -x) meets the wall z = 3 m (normal -z) in a concave edge, no depth jump."""
    rays = corner_rays()
    exact = torch.minimum(0.8 / rays[0].clamp(min=1e-9), 3.0 / rays[2])[None]
    disparity = torch.round(FOCAL_BASELINE / exact / 0.125) * 0.125
    return (FOCAL_BASELINE / disparity).float()


def test_floors_are_flat_helps_at_a_real_concave_corner():
    rays = corner_rays()
    on_side_wall = 0.8 / rays[0].clamp(min=1e-9) < 3.0 / rays[2]
    exact = torch.zeros(3, NOISY_H, NOISY_W)
    exact[0, on_side_wall], exact[2, ~on_side_wall] = -1.0, -1.0
    options = preset_options("real", NOISY_W)
    smoothed = normals_from_depth(corner_depth(), NOISY_K, **options)
    semseg = torch.zeros(NOISY_H, NOISY_W, dtype=torch.int64)
    flat = normals_from_depth(corner_depth(), NOISY_K, **options, semseg=semseg, flat_classes=[0])

    def mean_error(normals: torch.Tensor) -> float:
        cosine = (normals * exact).sum(0).clamp(-1, 1)
        return torch.rad2deg(torch.acos(cosine)).mean().item()

    assert mean_error(flat) < mean_error(smoothed)
    side, back = flat[:, on_side_wall], flat[:, ~on_side_wall]
    side_mode, back_mode = side.mode(dim=1).values, back.mode(dim=1).values
    assert (side_mode * back_mode).sum().abs() < math.cos(math.radians(80))


def test_preset_windows_scale_with_the_image_width():
    assert preset_options("real", 640) == NORMALS_PRESETS["real"]
    assert preset_options("real", 160)["smoothing"] == 8
    assert preset_options("real", 32)["smoothing"] == 3
    assert preset_options("synthetic", 160) == NORMALS_PRESETS["synthetic"]
    with pytest.raises(ValueError, match="unknown normals preset 'kinect'"):
        preset_options("kinect", 640)


def test_flat_regions_split_at_classes_and_stay_apart_from_other_classes():
    generator = torch.Generator().manual_seed(1)
    base = torch.tensor([0.0, -1.0, -0.2])
    normals = base[:, None, None] + 0.01 * torch.randn(3, 20, 30, generator=generator)
    normals[:, :, 20:] = torch.tensor([0.8, 0.0, -0.6])[:, None, None]  # 1.4 rad away
    normals = torch.nn.functional.normalize(normals, dim=0)
    normals[:, 0, 0] = 0.0  # invalid stays invalid
    semseg = torch.zeros(20, 30, dtype=torch.int64)
    semseg[:, 10:15] = 1  # same normals, another class
    semseg[15:, :5] = 7  # not a flat class: unchanged
    flattened = flatten_flat_classes(normals, semseg, flat_classes=[0, 1])
    left = flattened[:, 1:15, 0:10].reshape(3, -1)
    assert torch.unique(left, dim=1).shape[1] == 1
    mean = torch.nn.functional.normalize(normals[:, :, :10][:, semseg[:, :10] == 0].sum(1), dim=0)
    assert torch.allclose(left[:, 0], mean, atol=1e-6)
    assert torch.unique(flattened[:, :, 10:15].reshape(3, -1), dim=1).shape[1] == 1
    assert not torch.equal(flattened[:, 5, 12], flattened[:, 5, 5])
    assert torch.unique(flattened[:, :, 20:].reshape(3, -1), dim=1).shape[1] == 1
    assert torch.equal(flattened[:, 15:, :5], normals[:, 15:, :5])
    assert torch.equal(flattened[:, 0, 0], torch.zeros(3))
    # the same normals in two blobs not 4-connected: two components, two means
    split = semseg.clone()
    split[:, 5] = 7
    apart = flatten_flat_classes(normals, split, flat_classes=[0])
    assert not torch.equal(apart[:, 5, 2], apart[:, 5, 8])


def test_real_options_reject_bad_arguments():
    with pytest.raises(ValueError, match="smoothing"):
        normals_from_depth(torch.ones(1, 8, 8), K, smoothing=-1)
    with pytest.raises(ValueError, match="semseg"):
        normals_from_depth(torch.ones(1, 8, 8), K, flat_classes=[0])
    with pytest.raises(ValueError, match="flat_angle"):
        flatten_flat_classes(torch.ones(3, 8, 8), torch.zeros(8, 8), [0], max_angle=2.0)


def test_synthetic_preset_is_the_default_behaviour():
    depth = noisy_plane_depth()
    default = normals_from_depth(depth, NOISY_K)
    assert torch.equal(normals_from_depth(depth, NOISY_K, **NORMALS_PRESETS["synthetic"]), default)
