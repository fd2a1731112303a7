"""Patch discriminators of multi-task domain adaptation (Lopes et al., WACV 2023, Supp. B.3)."""

import pytest
import torch
from torch import nn

from densetasks.models.discriminators import DISCRIMINATOR_WIDTHS, PatchDiscriminator


def test_five_spectral_norm_convolutions_4x4_stride_2_with_leaky_relu():
    discriminator = PatchDiscriminator(7)
    convolutions = [layer for layer in discriminator if isinstance(layer, nn.Conv2d)]
    assert [conv.out_channels for conv in convolutions] == [*DISCRIMINATOR_WIDTHS, 1]
    assert DISCRIMINATOR_WIDTHS == (64, 128, 256, 512)
    assert convolutions[0].in_channels == 7
    for conv in convolutions:
        assert conv.kernel_size == (4, 4) and conv.stride == (2, 2) and conv.padding == (1, 1)
        assert torch.nn.utils.parametrize.is_parametrized(conv, "weight")
    activations = [layer for layer in discriminator if isinstance(layer, nn.LeakyReLU)]
    assert len(activations) == 4 and all(act.negative_slope == 0.2 for act in activations)
    assert isinstance(discriminator[-1], nn.Conv2d)  # logits: no activation after the last


@pytest.mark.parametrize(("size", "grid"), [((32, 32), (1, 1)), ((64, 96), (2, 3))])
def test_one_logit_per_32_pixel_patch(size, grid):
    discriminator = PatchDiscriminator(3, widths=(8, 16, 32, 64))
    assert discriminator(torch.rand(2, 3, *size)).shape == (2, 1, *grid)


def test_spectral_norm_keeps_the_largest_singular_value_near_one():
    torch.manual_seed(0)
    discriminator = PatchDiscriminator(2, widths=(8, 16, 32, 64))
    for _ in range(30):  # power iterations run in training-mode forwards
        discriminator(torch.rand(1, 2, 32, 32))
    with torch.no_grad():
        for layer in discriminator:
            if isinstance(layer, nn.Conv2d):
                sigma = torch.linalg.matrix_norm(layer.weight.flatten(1), ord=2)
                assert float(sigma) == pytest.approx(1.0, abs=0.05)
                raw = layer.parametrizations.weight.original.flatten(1)
                assert float(torch.linalg.matrix_norm(raw, ord=2)) != pytest.approx(1.0, abs=0.05)


def test_bad_inputs_name_the_shape():
    discriminator = PatchDiscriminator(3, widths=(4, 8, 16, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        discriminator(torch.rand(1, 2, 32, 32))
    with pytest.raises(ValueError, match="32 pixels"):
        discriminator(torch.rand(1, 3, 16, 64))
    with pytest.raises(ValueError, match="in_channels"):
        PatchDiscriminator(0)
