"""Task heads: turn the (bottlenecked) feature list into one task's output at input size.

A head is built from the feature list's ``feature_info`` and the task's channel count, and
is called as ``head(features, size)`` with the input image's ``(H, W)``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from densetasks._registry import Registry
from densetasks.models.base import FeatureSpec
from densetasks.models.bottlenecks import conv_bn_relu


def upsample(features: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize to ``size`` (``align_corners=False``, as torchvision's DeepLab does)."""
    return F.interpolate(features, size=size, mode="bilinear", align_corners=False)


class DeepLabHead(nn.Module):
    """The per-task decoder of Kendall et al., CVPR 2018 (Sec. 4 and App. A) on the deepest feature.

    Conv to ``channels`` (256) + BN + ReLU, 1×1 conv to the task's channels, bilinear
    upsampling to the input size. ``kernel_size`` is 3 as in the paper body; the appendix
    describes 1, which ``kernel_size=1`` gives.
    """

    def __init__(
        self,
        feature_info: list[FeatureSpec],
        out_channels: int,
        channels: int = 256,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.hidden = conv_bn_relu(feature_info[-1].channels, channels, kernel_size)
        self.classifier = nn.Conv2d(channels, out_channels, 1)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        return upsample(self.classifier(self.hidden(features[-1])), size)


class MultiScaleHead(nn.Module):
    """A top-down decoder with skip connections (FPN-style), finer than :class:`DeepLabHead`.

    The deepest map is projected to ``channels`` by 1×1 conv + BN + ReLU. Then, for every
    shallower encoder map whose stride is at least ``finest_stride``, from deep to shallow:
    upsample to the skip's size, add the skip projected by a 1×1 conv, refine with 3×3 conv +
    BN + ReLU. A final 1×1 conv gives the task's channels, upsampled bilinearly to the input.
    """

    def __init__(
        self,
        feature_info: list[FeatureSpec],
        out_channels: int,
        channels: int = 128,
        finest_stride: int = 4,
    ) -> None:
        super().__init__()
        self.skip_indices = [
            index
            for index in reversed(range(len(feature_info) - 1))
            if feature_info[index].stride >= finest_stride
        ]
        self.top = conv_bn_relu(feature_info[-1].channels, channels)
        self.laterals = nn.ModuleList(
            nn.Conv2d(feature_info[index].channels, channels, 1) for index in self.skip_indices
        )
        self.refines = nn.ModuleList(conv_bn_relu(channels, channels, 3) for _ in self.skip_indices)
        self.classifier = nn.Conv2d(channels, out_channels, 1)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        decoded = self.top(features[-1])
        steps = zip(self.skip_indices, self.laterals, self.refines, strict=True)
        for index, lateral, refine in steps:
            skip = features[index]
            decoded = refine(upsample(decoded, skip.shape[-2:]) + lateral(skip))
        return upsample(self.classifier(decoded), size)


HEADS: Registry[nn.Module] = Registry("head")
"""Head name -> ``factory(feature_info, out_channels, **options)``."""

HEADS.register("deeplab", DeepLabHead)
HEADS.register("multiscale", MultiScaleHead)


def create_head(
    name: str, feature_info: list[FeatureSpec], out_channels: int, **options: object
) -> nn.Module:
    """The registered head ``name`` for features ``feature_info`` and ``out_channels``."""
    return HEADS.create(
        name, feature_info, out_channels, config_path="model.head_options", **options
    )
