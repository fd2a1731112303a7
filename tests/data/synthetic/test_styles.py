"""The ``night`` style: same geometry and labels as ``default``, another look."""

import dataclasses

import numpy as np
import torch

from densetasks.data.synthetic import STYLES, SyntheticScenes
from densetasks.data.synthetic.layout import sample_scene
from densetasks.data.synthetic.render import render


def test_night_keeps_every_label_of_the_same_seed_and_index():
    day = SyntheticScenes(3, size=(40, 48), seed=5, style="default")
    night = SyntheticScenes(3, size=(40, 48), seed=5, style="night")
    for index in range(3):
        a, b = day[index], night[index]
        for key in day.tasks:
            assert torch.equal(a[key], b[key]), key
        assert not torch.equal(a["image"], b["image"])


def test_night_is_bluer_than_default():
    night = STYLES["night"]
    assert night.hue == (0.45, 0.85) and night.blur > 0 and night.grain > 0
    day = SyntheticScenes(4, size=(48, 48), style="default")
    dark = SyntheticScenes(4, size=(48, 48), style="night")
    day_mean = torch.stack([day[i]["image"].mean(dim=(1, 2)) for i in range(4)]).mean(0)
    night_mean = torch.stack([dark[i]["image"].mean(dim=(1, 2)) for i in range(4)]).mean(0)
    assert night_mean[2] / night_mean[0] > 1.3 * day_mean[2] / day_mean[0]


def test_fog_mixes_in_its_colour_with_distance():
    """Dense fog leaves only the fog colour (through the tone curve); without fog the image
    is not that colour."""
    scene = sample_scene(np.random.default_rng([0, 0, 0]), 32, 32, (3, 6), (0, 2))
    clear = dataclasses.replace(STYLES["night"], grain=0.0, blur=0.0, fog_density=0.0)
    dense = dataclasses.replace(clear, fog_density=100.0)
    fog = np.asarray(clear.fog_colour, dtype=np.float32)[:, None, None] ** clear.gamma
    image = render(scene, dense, np.random.default_rng(1)).image
    assert np.allclose(image, fog, atol=1e-4)
    assert not np.allclose(render(scene, clear, np.random.default_rng(1)).image, fog, atol=0.05)


def test_blur_smooths_the_image_before_the_grain():
    """With grain off, the blurred image has smaller neighbour differences than the sharp one."""
    scene = sample_scene(np.random.default_rng([0, 0, 0]), 48, 48, (3, 6), (0, 2))
    sharp_style = dataclasses.replace(STYLES["night"], grain=0.0, blur=0.0)
    blurred_style = dataclasses.replace(STYLES["night"], grain=0.0)
    sharp = render(scene, sharp_style, np.random.default_rng(1)).image
    blurred = render(scene, blurred_style, np.random.default_rng(1)).image
    assert np.abs(np.diff(blurred, axis=2)).mean() < 0.8 * np.abs(np.diff(sharp, axis=2)).mean()
    assert abs(blurred.mean() - sharp.mean()) < 0.01
