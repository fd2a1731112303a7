import pytest
import torch

from densetasks.data.geometry import normals_from_depth, unproject
from densetasks.data.sample import IGNORE_INDEX, LabelKind
from densetasks.data.transforms import (
    CenterCrop,
    ColorJitter,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScaleCrop,
    Resize,
    build_transforms,
    crop,
    hflip,
    resize,
)
from densetasks.tasks.registry import label_kinds

H, W = 12, 16
K = torch.tensor([[20.0, 0.0, 7.0], [0.0, 22.0, 5.5], [0.0, 0.0, 1.0]])
LABELS = ("semseg", "parts", "depth", "normals", "edges", "saliency", "instance")
KINDS = label_kinds()


def make_sample(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(3, H, W, generator=g),
        "semseg": torch.randint(0, 4, (H, W), generator=g),
        "parts": torch.randint(0, 3, (H, W), generator=g),
        "depth": torch.rand(1, H, W, generator=g) + 0.5,
        "normals": torch.nn.functional.normalize(torch.randn(3, H, W, generator=g), dim=0),
        "edges": torch.randint(0, 2, (H, W), generator=g).to(torch.uint8),
        "saliency": torch.randint(0, 2, (H, W), generator=g).to(torch.uint8),
        "instance": torch.randint(0, 6, (H, W), generator=g),
        "meta": {"name": "s", "intrinsics": K.clone()},
    }


MARKERS = {"semseg": 2, "parts": 1, "edges": 1, "saliency": 1, "instance": 7}


def marker_sample() -> dict:
    """Every label 'empty' except one marker pixel at (row 4, column 6)."""
    sample = {"image": torch.zeros(3, H, W), "meta": {"name": "m", "intrinsics": K.clone()}}
    sample["image"][:, 4, 6] = 1.0
    for key, value in MARKERS.items():
        dtype = torch.uint8 if key in ("edges", "saliency") else torch.int64
        sample[key] = torch.zeros(H, W, dtype=dtype)
        sample[key][4, 6] = value
    sample["depth"] = torch.full((1, H, W), 1.0)
    sample["depth"][0, 4, 6] = 5.0
    sample["normals"] = torch.tensor([0.0, 0.0, -1.0])[:, None, None].repeat(1, H, W)
    sample["normals"][:, 4, 6] = torch.tensor([0.6, 0.0, -0.8])
    return sample


def marker_positions(sample: dict) -> dict[str, tuple[int, ...]]:
    """Where each entry has its marker value."""
    positions = {"image": tuple((sample["image"][0] > 0.5).nonzero()[0].tolist())}
    for key, value in MARKERS.items():
        positions[key] = tuple((sample[key] == value).nonzero()[0].tolist())
    positions["depth"] = tuple((sample["depth"][0] == 5.0).nonzero()[0].tolist())
    positions["normals"] = tuple((sample["normals"][0].abs() == 0.6).nonzero()[0].tolist())
    return positions


def test_flip_twice_is_identity_for_every_kind():
    sample = make_sample()
    twice = hflip(hflip(sample, KINDS), KINDS)
    for key in ("image", *LABELS):
        assert torch.equal(twice[key], sample[key]), key
    assert torch.allclose(twice["meta"]["intrinsics"], K)


def test_flip_negates_normals_x_and_mirrors_every_label():
    sample = make_sample()
    flipped = hflip(sample, KINDS)
    assert torch.equal(flipped["normals"][0], -sample["normals"][0].flip(-1))
    assert torch.equal(flipped["normals"][1:], sample["normals"][1:].flip(-1))
    for key in ("semseg", "parts", "edges", "saliency", "instance", "depth", "image"):
        assert torch.equal(flipped[key], sample[key].flip(-1)), key
    assert flipped["meta"]["intrinsics"][0, 2] == pytest.approx(W - 1 - 7.0)


def test_flipped_depth_is_the_depth_of_the_flipped_scene():
    # A tilted plane n·p = d; mirroring the scene in x gives the plane with n_x negated.
    normal = torch.nn.functional.normalize(torch.tensor([0.4, -0.1, -1.0]), dim=0)
    mirrored = normal * torch.tensor([-1.0, 1.0, 1.0])
    k_centred = torch.tensor([[20.0, 0.0, (W - 1) / 2], [0.0, 22.0, 5.5], [0.0, 0.0, 1.0]])
    rays = unproject(torch.ones(1, H, W), k_centred)

    def depth_of(n):
        return (-2.0 / (n[:, None, None] * rays).sum(0))[None]

    scene = {
        "image": torch.rand(3, H, W),
        "depth": depth_of(normal),
        "meta": {"name": "p", "intrinsics": k_centred},
    }
    scene["normals"] = normals_from_depth(scene["depth"], k_centred)
    flipped = hflip(scene, KINDS)
    assert torch.allclose(flipped["meta"]["intrinsics"], k_centred)
    assert torch.allclose(flipped["depth"], depth_of(mirrored), rtol=1e-5)
    expected_normals = normals_from_depth(depth_of(mirrored), k_centred)
    assert torch.allclose(flipped["normals"], expected_normals, atol=1e-4)


REGRESSION = label_kinds({"shading": LabelKind.REGRESSION})


def test_a_regression_label_is_moved_never_blended_and_padded_with_nan():
    shading = torch.arange(2 * H * W, dtype=torch.float32).reshape(2, H, W)
    shading[:, 0, 0] = float("nan")
    sample = {"image": torch.rand(3, H, W), "shading": shading, "meta": {"name": "r"}}
    flipped = hflip(sample, REGRESSION)["shading"]
    assert torch.equal(flipped.nan_to_num(-1.0), shading.flip(-1).nan_to_num(-1.0))
    resized = resize(sample, (H + 5, W + 3), REGRESSION)["shading"]
    kept = resized[~resized.isnan()]
    assert set(kept.tolist()) <= set(shading[~shading.isnan()].tolist())  # copied, not mixed
    assert resized.isnan().sum() <= 2 * 2 * 2  # the NaN pixel copied at most 2 × 2 times
    cropped = crop(sample, top=-1, left=0, size=(H, W), kinds=REGRESSION)["shading"]
    assert cropped[:, 0].isnan().all() and torch.equal(cropped[:, 2:], shading[:, 1:-1])


def test_random_flip_uses_its_generator_and_probability():
    sample = make_sample()
    assert RandomHorizontalFlip(KINDS, p=0.0)(sample) is sample
    assert torch.equal(
        RandomHorizontalFlip(KINDS, p=1.0)(sample)["image"], sample["image"].flip(-1)
    )

    def decisions(seed: int) -> list[bool]:
        flip = RandomHorizontalFlip(KINDS, 0.5, generator=torch.Generator().manual_seed(seed))
        return [flip(sample) is not sample for _ in range(20)]

    assert decisions(3) == decisions(3)
    assert 0 < sum(decisions(3)) < 20


def test_resize_keeps_only_existing_ids_and_values():
    sample = make_sample()
    for size in ((5, 7), (30, 41)):
        out = Resize(size, KINDS)(sample)
        assert out["image"].shape == (3, *size)
        for key in ("semseg", "parts", "edges", "saliency", "instance"):
            assert out[key].shape == size and out[key].dtype == sample[key].dtype
            assert set(out[key].unique().tolist()) <= set(sample[key].unique().tolist())
        assert set(out["depth"].unique().tolist()) <= set(sample["depth"].unique().tolist())
        assert torch.allclose(out["normals"].norm(dim=0), torch.ones(size))


def test_resize_scales_intrinsics_and_doubling_repeats_pixels():
    sample = make_sample()
    out = resize(sample, (2 * H, 2 * W), KINDS)
    doubled = sample["semseg"].repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(out["semseg"], doubled)
    expected = torch.tensor([[40.0, 0.0, 14.5], [0.0, 44.0, 11.5], [0.0, 0.0, 1.0]])
    assert torch.allclose(out["meta"]["intrinsics"], expected)


def test_crop_keeps_alignment_and_pads_with_invalid_values():
    sample = marker_sample()
    out = crop(sample, top=2, left=-3, size=(8, 14), kinds=KINDS)
    positions = marker_positions(out)
    assert set(positions.values()) == {(2, 9)}
    assert out["semseg"][:, :3].eq(IGNORE_INDEX).all()
    assert out["edges"][:, :3].eq(IGNORE_INDEX).all()
    assert out["depth"][:, :, :3].eq(0).all() and out["normals"][:, :, :3].eq(0).all()
    assert out["instance"][:, :3].eq(0).all() and out["image"][:, :, :3].eq(0).all()
    moved = out["meta"]["intrinsics"]
    assert moved[0, 2] == pytest.approx(7.0 + 3) and moved[1, 2] == pytest.approx(5.5 - 2)


@pytest.mark.parametrize("seed", range(4))
def test_random_scale_crop_moves_marker_identically_everywhere(seed):
    generator = torch.Generator().manual_seed(seed)
    transform = RandomScaleCrop((0.7, 1.6), (10, 10), KINDS, generator=generator)
    sample = marker_sample()
    sample["image"][:, 4:6, 6:8] = 1.0  # 2x2 block so the marker survives downscaling
    for key, value in MARKERS.items():
        sample[key][4:6, 6:8] = value
    sample["depth"][0, 4:6, 6:8] = 5.0
    sample["normals"][:, 4:6, 6:8] = sample["normals"][:, 4, 6][:, None, None]
    out = transform(sample)
    assert out["image"].shape == (3, 10, 10)
    marker = out["depth"][0] == 5.0
    assert torch.equal(out["normals"][0] == 0.6, marker)
    for key, value in MARKERS.items():
        assert torch.equal(out[key] == value, marker), key
    if marker.any():  # bilinear image: its bright blob is centred on the label marker
        rows, columns = marker.nonzero(as_tuple=True)
        weights = out["image"][0]
        grid = torch.meshgrid(torch.arange(10.0), torch.arange(10.0), indexing="ij")
        for axis, marked in zip(grid, (rows, columns), strict=True):
            centre = (weights * axis).sum() / weights.sum()
            assert centre == pytest.approx(marked.float().mean(), abs=0.5)


def test_scale_crop_intrinsics_project_marker_consistently():
    # The 3-D point seen at the marker pixel must project to the marker's new position;
    # after the flip the image shows the mirrored scene, so the point's x changes sign.
    sample = marker_sample()
    point = torch.linalg.inv(K) @ torch.tensor([6.0, 4.0, 1.0]) * 3.0
    mirrored = point * torch.tensor([-1.0, 1.0, 1.0])
    out = Compose(
        [Resize((24, 32), KINDS), CenterCrop((20, 20), KINDS), RandomHorizontalFlip(KINDS, 1.0)]
    )(sample)
    u, v = (out["meta"]["intrinsics"] @ mirrored)[:2] / mirrored[2]
    rows, columns = (out["semseg"] == 2).nonzero(as_tuple=True)
    assert u == pytest.approx(columns.float().mean().item(), abs=1e-4)
    assert v == pytest.approx(rows.float().mean().item(), abs=1e-4)


def test_random_crop_is_reproducible_with_a_seeded_generator():
    sample = make_sample()
    first = RandomCrop((6, 6), KINDS, generator=torch.Generator().manual_seed(5))(sample)
    second = RandomCrop((6, 6), KINDS, generator=torch.Generator().manual_seed(5))(sample)
    assert torch.equal(first["image"], second["image"])
    assert torch.equal(first["semseg"], second["semseg"])


def test_color_jitter_and_normalize_touch_the_image_only():
    sample = make_sample()
    jittered = ColorJitter(0.5, 0.5, 0.5, generator=torch.Generator().manual_seed(0))(sample)
    assert not torch.equal(jittered["image"], sample["image"])
    normalized = Normalize(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))(sample)
    assert torch.allclose(normalized["image"], (sample["image"] - 0.5) / 0.25)
    for out in (jittered, normalized):
        for key in LABELS:
            assert out[key] is sample[key]


def test_unknown_tensor_key_is_an_error_and_kinds_extend():
    sample = make_sample()
    sample["palette"] = torch.zeros(H, W, dtype=torch.int64)
    with pytest.raises(ValueError, match="'palette'.*no known label kind"):
        hflip(sample, KINDS)
    out = RandomHorizontalFlip(label_kinds({"palette": LabelKind.MASK}), 1.0)(sample)
    assert out["palette"].shape == (H, W)


def test_label_of_other_size_is_an_error():
    sample = make_sample()
    sample["depth"] = torch.ones(1, H + 1, W)
    with pytest.raises(ValueError, match="'depth' has size"):
        resize(sample, (6, 8), KINDS)


def test_build_transforms_train_and_eval():
    sample = make_sample()
    generator = torch.Generator().manual_seed(0)
    train = build_transforms(True, (8, 8), kinds=KINDS, color_jitter=0.3, generator=generator)
    out = train(sample)
    assert out["image"].shape == (3, 8, 8) and out["semseg"].shape == (8, 8)
    names = [type(step).__name__ for step in train.transforms]
    assert names == ["RandomScaleCrop", "RandomHorizontalFlip", "ColorJitter", "Normalize"]
    evaluation = build_transforms(False, (8, 8), kinds=KINDS)
    assert [type(step).__name__ for step in evaluation.transforms] == ["Resize", "Normalize"]
    assert torch.equal(evaluation(sample)["image"], evaluation(sample)["image"])
    assert build_transforms(False, None, kinds=KINDS, normalize=False).transforms == []
