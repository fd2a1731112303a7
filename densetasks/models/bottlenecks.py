"""Bottlenecks: a context module on the deepest encoder feature, shared by every task.

A bottleneck takes the encoder's feature list and replaces its deepest map; the shallower
maps pass through unchanged so that multi-scale heads can still use them as skips. Its
:attr:`Bottleneck.feature_info` describes the list it returns.
"""

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from densetasks._registry import Registry
from densetasks.errors import ConfigError
from densetasks.models.base import FeatureSpec

ASPP_RATES_AT_STRIDE_8 = (12, 24, 36)
"""3×3 ASPP dilation rates at output stride 8 (Kendall et al., CVPR 2018, App. A)."""

ASPP_DROPOUT_LOPES2023_CODE = 0.5
"""Dropout after the ASPP in the authors' DenseMTL code (Lopes et al., WACV 2023, after
DeepLabV3's ASPP); the paper does not mention it, so :class:`ASPP` defaults to none."""

EASPP_RATES_AT_STRIDE_16 = (3, 6, 12)
"""eASPP dilation rates at output stride 16 (Hickson et al., network fission, supplementary
Sec. 1.3, after AdapNet++)."""


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1
) -> nn.Sequential:
    """Convolution (no bias, "same" padding) + BatchNorm + ReLU: the unit of ASPP and heads."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def conv_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    """1×1 convolution (no bias) + BatchNorm, no activation: a projection whose output is
    summed, concatenated or read as a prediction (eASPP's output, fission's skips and heads)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
    )


class Bottleneck(nn.Module, ABC):
    """Transforms the deepest feature map; the others pass through as skips."""

    def __init__(self, feature_info: list[FeatureSpec], out_channels: int) -> None:
        super().__init__()
        deepest = feature_info[-1]
        self.feature_info = [*feature_info[:-1], FeatureSpec(out_channels, deepest.stride)]

    @abstractmethod
    def transform(self, deepest: torch.Tensor) -> torch.Tensor:
        """The new deepest feature map, ``feature_info[-1].channels`` channels, same size."""

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [*features[:-1], self.transform(features[-1])]


class NoBottleneck(Bottleneck):
    """Passes the encoder features through unchanged (bottleneck ``"none"``)."""

    def __init__(self, feature_info: list[FeatureSpec]) -> None:
        super().__init__(feature_info, feature_info[-1].channels)

    def transform(self, deepest: torch.Tensor) -> torch.Tensor:
        return deepest


class ImagePooling(nn.Module):
    """Global average pooling, 1×1 conv + BN + ReLU, broadcast back to the input size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.project = conv_bn_relu(in_channels, out_channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = self.project(F.adaptive_avg_pool2d(features, 1))
        return F.interpolate(pooled, size=features.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(Bottleneck):
    """Atrous spatial pyramid pooling as in Kendall et al., CVPR 2018, App. A (DeepLabV3).

    Five parallel branches of ``channels`` (256) each with BN + ReLU: a 1×1 conv, three 3×3
    convs with dilation 12 / 24 / 36 at output stride 8 (scaled with the stride: 6 / 12 / 18
    at 16, 3 / 6 / 9 at 32) and global average pooling + 1×1 conv. Their concatenation
    (5 × 256 = 1280 channels) is the representation Kendall et al., CVPR 2018
    share between tasks.
    ``project=True`` adds DeepLabV3's 1×1 conv + BN + ReLU back to ``channels``.
    ``dropout`` > 0 adds dropout on the output (after the projection, if any), as DeepLabV3
    implementations do: the authors' code of Lopes et al. uses
    :data:`ASPP_DROPOUT_LOPES2023_CODE` (0.5); their paper states none, so the default 0 adds
    nothing (the paper's version by default, the code's as an option).
    Like every BatchNorm after global pooling, training needs a batch of at least 2.
    """

    def __init__(
        self,
        feature_info: list[FeatureSpec],
        channels: int = 256,
        project: bool = False,
        dropout: float = 0.0,
    ) -> None:
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(
                "ASPP dropout (model.bottleneck_options.dropout or "
                f"model.options.aspp_options.dropout) must be in [0, 1); got {dropout}"
            )
        concatenated = 5 * channels
        super().__init__(feature_info, channels if project else concatenated)
        deepest = feature_info[-1]
        self.rates = tuple(rate * 8 // deepest.stride for rate in ASPP_RATES_AT_STRIDE_8)
        self.branches = nn.ModuleList(
            [conv_bn_relu(deepest.channels, channels)]
            + [conv_bn_relu(deepest.channels, channels, 3, rate) for rate in self.rates]
            + [ImagePooling(deepest.channels, channels)]
        )
        self.project = conv_bn_relu(concatenated, channels) if project else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def transform(self, deepest: torch.Tensor) -> torch.Tensor:
        features = torch.cat([branch(deepest) for branch in self.branches], dim=1)
        return self.dropout(self.project(features))


class EASPP(Bottleneck):
    """Efficient ASPP of AdapNet++, the bottleneck of network fission (Hickson et al., network
    fission, supplementary Sec. 1.1 and 1.3; the authors' code).

    Five parallel branches of ``channels`` (256): a 1×1 conv; three cascaded atrous branches,
    each 1×1 conv to ``branch_channels`` (64), two 3×3 convs at ``branch_channels`` dilated by
    3 / 6 / 12 at output stride 16 (scaled with the stride like :class:`ASPP`), 1×1 conv back
    to ``channels``; global average pooling + 1×1 conv. Every conv has BN + ReLU. The
    concatenation (5 × 256 = 1280) is projected by a 1×1 conv + BN back to ``channels``,
    without ReLU, as the authors' code does. Training needs a batch of at least 2 (BN after
    global pooling).
    """

    def __init__(
        self, feature_info: list[FeatureSpec], channels: int = 256, branch_channels: int = 64
    ) -> None:
        super().__init__(feature_info, channels)
        deepest = feature_info[-1]
        self.rates = tuple(rate * 16 // deepest.stride for rate in EASPP_RATES_AT_STRIDE_16)
        self.branches = nn.ModuleList(
            [conv_bn_relu(deepest.channels, channels)]
            + [
                nn.Sequential(
                    conv_bn_relu(deepest.channels, branch_channels),
                    conv_bn_relu(branch_channels, branch_channels, 3, rate),
                    conv_bn_relu(branch_channels, branch_channels, 3, rate),
                    conv_bn_relu(branch_channels, channels),
                )
                for rate in self.rates
            ]
            + [ImagePooling(deepest.channels, channels)]
        )
        self.project = conv_bn(len(self.branches) * channels, channels)

    def transform(self, deepest: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(deepest) for branch in self.branches], dim=1))


BOTTLENECKS: Registry[Bottleneck] = Registry("bottleneck")
"""Bottleneck name -> ``factory(feature_info, **options)``."""

BOTTLENECKS.register("aspp", ASPP)
BOTTLENECKS.register("easpp", EASPP)
BOTTLENECKS.register("none", NoBottleneck)


def create_bottleneck(name: str, feature_info: list[FeatureSpec], **options: object) -> Bottleneck:
    """The registered bottleneck ``name`` on an encoder described by ``feature_info``."""
    return BOTTLENECKS.create(name, feature_info, config_path="model.bottleneck_options", **options)
