"""Patch discriminators for output-level adversarial domain adaptation.

Lopes et al. (WACV 2023, Sec. 4.5 and Supp. B.3) align source and target domains with one
small discriminator per task and per supervised scale, trained to tell which domain a task's
output map comes from (after AdvEnt, Vu et al., CVPR 2019). The network is the one of their
released code (``models/discriminator.py``, after Wang et al.): five 4×4 convolutions of
stride 2 with spectral normalisation (Miyato et al., ICLR 2018), widths 64-128-256-512-1,
LeakyReLU 0.2 between them. Its output is a grid of logits, one per input patch
(``[B, 1, ~H/32, ~W/32]``), so an input needs at least 32 pixels per side.
"""

import itertools
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

DISCRIMINATOR_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)
"""Hidden widths (``ndf`` = 64 doubling); a last convolution gives one logit (Lopes et al.'s
released code)."""

NEGATIVE_SLOPE = 0.2
"""LeakyReLU slope between the convolutions (ibid.)."""

MIN_INPUT_SIZE = 2 ** (len(DISCRIMINATOR_WIDTHS) + 1)
"""Five stride-2 convolutions (kernel 4, padding 1) need 32 pixels to give one output."""


class PatchDiscriminator(nn.Sequential):
    """``[B, in_channels, H, W]`` map -> ``[B, 1, h, w]`` logits (1 = "source", 0 = "target").

    Every convolution has kernel 4, stride 2, padding 1 and spectral normalisation (its
    power-iteration vectors are buffers, so they are checkpointed with the weights).
    """

    def __init__(self, in_channels: int, widths: Sequence[int] = DISCRIMINATOR_WIDTHS) -> None:
        if in_channels < 1:
            raise ValueError(f"a discriminator needs in_channels >= 1, got {in_channels}")
        channels = [in_channels, *widths, 1]
        layers: list[nn.Module] = []
        for index, (inputs, outputs) in enumerate(itertools.pairwise(channels)):
            layers.append(spectral_norm(nn.Conv2d(inputs, outputs, 4, stride=2, padding=1)))
            if index < len(channels) - 2:
                layers.append(nn.LeakyReLU(NEGATIVE_SLOPE))
        super().__init__(*layers)
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"discriminator input must be [B, {self.in_channels}, H, W], got {tuple(x.shape)}"
            )
        if min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(
                f"discriminator input {tuple(x.shape[-2:])} is smaller than "
                f"{MIN_INPUT_SIZE} pixels per side (five stride-2 convolutions)"
            )
        return super().forward(x)
