"""The Kinect-like depth-noise model of the synthetic scenes (Hickson et al., network fission,
supplementary Sec. 2.2: real depth is quantised, holed and range-limited)."""

import numpy as np
import pytest
import torch

from densetasks.data.registry import create_dataset
from densetasks.data.synthetic import SyntheticScenes
from densetasks.data.synthetic.depth_noise import KinectNoise, kinect_depth, projector_shadow
from densetasks.errors import ConfigError
from densetasks.tasks.registry import label_kinds

FOCAL = 500.0
QUANTISE_ONLY = KinectNoise(sensor_width=64, disparity_noise=0.0, edge_spread=0.0)


def disparity(depth: np.ndarray) -> np.ndarray:
    return FOCAL * 0.075 / depth  # sensor_width 64 = image width: sensor pixels = image pixels


def test_depth_comes_from_disparity_quantised_to_an_eighth_pixel():
    exact = np.add.outer(np.linspace(1.0, 3.0, 48), np.linspace(0.0, 0.5, 64))  # no edges
    noisy = kinect_depth(exact, FOCAL, np.random.default_rng(0), QUANTISE_ONLY)
    assert (noisy > 0).all()
    steps = disparity(noisy.astype(np.float64)) * 8
    assert np.allclose(steps, np.round(steps), atol=1e-3)
    # rounding disparity moves it by at most 1/16 px
    assert np.abs(disparity(noisy.astype(np.float64)) - disparity(exact)).max() <= 1 / 16 + 1e-4
    assert len(np.unique(noisy)) < len(np.unique(exact)) / 10


def test_far_and_near_range_are_invalid():
    exact = np.full((8, 64), 3.0)
    exact[:, :10] = 0.6  # nearer than 0.8 m (on the left: it casts no shadow on the wall)
    exact[:, 54:] = 4.5  # beyond 4 m
    noisy = kinect_depth(exact, FOCAL, np.random.default_rng(0), KinectNoise(sensor_width=64))
    assert (noisy[:, :10] == 0).all() and (noisy[:, 54:] == 0).all()
    assert (noisy[:, 20:40] > 0).all()


def test_holes_at_depth_edges_and_the_projector_shadow():
    exact = np.full((32, 64), 3.0)
    exact[8:24, 30:40] = 1.5  # a near box in front of the wall
    noisy = kinect_depth(exact, FOCAL, np.random.default_rng(0), QUANTISE_ONLY)
    holes = noisy == 0
    assert holes[8:24, 29].all() and holes[8:24, 30].all()  # left edge, both sides
    assert holes[8:24, 39].all() and holes[8:24, 40].all()  # right edge, both sides
    assert holes[7, 30:40].all() and holes[8, 30:40].all()  # top edge
    # shadow: disparity 25 px on the box, 12.5 px on the wall: 12.5 px left of the box
    assert holes[10:22, 18:30].all() and not holes[10:22, 16].any()
    assert not holes[10:22, 41:].any() and not holes[:6].any() and not holes[26:].any()
    assert not holes[10:22, 31:39].any()  # the box itself is measured


def test_projector_shadow_is_empty_on_a_smooth_surface():
    slanted = np.linspace(20.0, 10.0, 64)[None].repeat(4, axis=0)
    assert not projector_shadow(slanted).any()


def test_edge_holes_spread_at_random_but_deterministically():
    exact = np.full((32, 64), 3.0)
    exact[8:24, 30:40] = 1.5
    spread = KinectNoise(sensor_width=64, edge_spread=0.5)
    first = kinect_depth(exact, FOCAL, np.random.default_rng(3), spread)
    again = kinect_depth(exact, FOCAL, np.random.default_rng(3), spread)
    other = kinect_depth(exact, FOCAL, np.random.default_rng(4), spread)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    ring = first[10:22, 41] == 0  # one pixel beyond the right edge holes
    assert 0 < ring.sum() < ring.size


def test_synthetic_scenes_with_kinect_noise_are_deterministic_per_seed_and_index():
    exact = SyntheticScenes(3, size=(48, 64), seed=2, tasks=["depth", "normals"])
    noisy = SyntheticScenes(
        3, size=(48, 64), seed=2, tasks=["depth", "normals"], depth_noise="kinect"
    )
    again = SyntheticScenes(
        3, size=(48, 64), seed=2, tasks=["depth", "normals"], depth_noise="kinect"
    )
    for index in (2, 0):
        sample = noisy[index]
        assert torch.equal(sample["depth"], again[index]["depth"])
        assert torch.equal(sample["normals"], exact[index]["normals"])  # labels stay exact
        valid = sample["depth"] > 0
        assert 0.2 < valid.float().mean() < 1.0
        relative = (sample["depth"] - exact[index]["depth"]).abs()[valid] / exact[index]["depth"][
            valid
        ]
        assert relative.max() < 0.05
    other_seed = SyntheticScenes(3, size=(48, 64), seed=3, tasks=["depth"], depth_noise="kinect")
    assert not torch.equal(other_seed[0]["depth"], noisy[0]["depth"])


def test_default_is_exact_depth_and_unknown_models_are_errors():
    scenes = SyntheticScenes(1, size=(32, 32), seed=1, tasks=["depth"])
    assert scenes.depth_noise == "none" and (scenes[0]["depth"] > 0).all()
    with pytest.raises(ConfigError, match="depth_noise 'lidar'"):
        SyntheticScenes(1, size=(32, 32), depth_noise="lidar")


def test_the_synthetic_dataset_of_a_config_passes_depth_noise_through():
    dataset = create_dataset(
        "synthetic", "val", label_kinds(), n_val=1, size=(32, 32), depth_noise="kinect"
    )
    assert dataset.depth_noise == "kinect"
