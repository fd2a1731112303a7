"""Encoders: timm backbones with ``features_only`` and a tiny conv net for tests.

Every encoder returns its feature maps shallow to deep (never the input image) and describes
them in :attr:`~densetasks.models.base.Encoder.feature_info` as ``(channels, stride)``.
The deepest stride is the *output stride*: 8, 16 or 32. Below 32 the last stages keep their
resolution and dilate their convolutions instead (DeepLab practice; paper 000 uses a
ResNet-101 at output stride 8, App. A).

``pretrained`` is ``False`` (random init), ``True`` (timm hub weights, needs the network) or
the path of a local weights file: a state dict of the timm network as timm distributes it
(``.pth``/``.bin`` read with ``torch.load(weights_only=True)``, or ``.safetensors``). Keys of
the classification head, which ``features_only`` drops, are ignored; any other missing or
unexpected key is an error that names the file and the keys.
"""

from functools import partial
from pathlib import Path

import timm
import torch
from timm.models import load_state_dict
from torch import nn

from densetasks._registry import Registry
from densetasks.errors import ConfigError
from densetasks.models.base import Encoder, FeatureSpec

OUTPUT_STRIDES = (8, 16, 32)
"""Output strides every encoder supports: 32 is the plain network, 8 and 16 dilate."""

Pretrained = bool | str | Path
"""``False``, ``True`` (hub weights) or the path of a local weights file."""


def _check_output_stride(output_stride: int) -> None:
    if output_stride not in OUTPUT_STRIDES:
        raise ConfigError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")


def load_weights_file(module: nn.Module, path: str | Path, what: str) -> None:
    """Load the state dict in ``path`` into ``module``, failing with the keys that differ.

    Unexpected keys whose top-level module does not exist in ``module`` (a classifier head
    that ``features_only`` removed) are ignored; every other mismatch raises
    :class:`ConfigError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pretrained weights file {str(path)!r} for {what} does not exist")
    try:
        state_dict = load_state_dict(str(path), weights_only=True)
    except Exception as error:  # torch / safetensors raise many unrelated types for bad files
        raise ConfigError(
            f"cannot read pretrained weights file {str(path)!r} for {what}: {error}"
        ) from error
    own_modules = {name for name, _ in module.named_children()}
    state_dict = {
        key: value for key, value in state_dict.items() if key.split(".")[0] in own_modules
    }
    own_state = module.state_dict()
    missing = sorted(set(own_state) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own_state))
    mismatched = sorted(
        f"{key} {tuple(value.shape)} != {tuple(own_state[key].shape)}"
        for key, value in state_dict.items()
        if key in own_state and value.shape != own_state[key].shape
    )
    if missing or unexpected or mismatched:
        raise ConfigError(
            f"pretrained weights file {str(path)!r} does not fit {what}: "
            f"missing keys {_shorten(missing)}, unexpected keys {_shorten(unexpected)}, "
            f"shape mismatches {_shorten(mismatched)}"
        )
    module.load_state_dict(state_dict)


def _shorten(keys: list[str], limit: int = 8) -> str:
    """At most ``limit`` keys, then how many more: error messages stay one readable line."""
    shown = ", ".join(keys[:limit])
    more = len(keys) - limit
    return f"[{shown}{f', ... ({more} more)' if more > 0 else ''}]"


class TimmEncoder(Encoder):
    """A timm backbone created with ``features_only=True`` and an output stride."""

    def __init__(self, name: str, pretrained: Pretrained = False, output_stride: int = 32) -> None:
        super().__init__()
        _check_output_stride(output_stride)
        hub_weights = pretrained is True
        try:
            self.model = timm.create_model(
                name, pretrained=hub_weights, features_only=True, output_stride=output_stride
            )
        except OSError as error:
            raise ConfigError(
                f"cannot download pretrained weights for encoder {name!r} ({error}); "
                "pass the path of a local weights file as pretrained instead"
            ) from error
        if pretrained is not False and not hub_weights:
            load_weights_file(self.model, pretrained, f"encoder {name!r}")
        self.feature_info = [
            FeatureSpec(channels, stride)
            for channels, stride in zip(
                self.model.feature_info.channels(), self.model.feature_info.reduction(), strict=True
            )
        ]

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(image))


class TinyEncoder(Encoder):
    """Five conv-BN-ReLU stages (strides 2 to 32, a few thousand parameters) for fast tests.

    It follows the same output-stride rule as the timm ResNets: a stage that would go below
    the output stride keeps stride 1 and doubles the dilation instead.
    """

    WIDTHS = (8, 8, 16, 16, 32)

    def __init__(self, pretrained: Pretrained = False, output_stride: int = 32) -> None:
        super().__init__()
        _check_output_stride(output_stride)
        if pretrained is True:
            raise ConfigError("encoder 'tiny' has no hub weights; pass a local weights file")
        stages, specs = [], []
        in_channels, stride, dilation = 3, 1, 1
        for width in self.WIDTHS:
            if stride * 2 <= output_stride:
                stride, step = stride * 2, 2
            else:
                dilation, step = dilation * 2, 1
            stages.append(
                nn.Sequential(
                    nn.Conv2d(
                        in_channels, width, 3, stride=step, padding=dilation,
                        dilation=dilation, bias=False,
                    ),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                )
            )
            specs.append(FeatureSpec(width, stride))
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.feature_info = specs
        if pretrained is not False:
            load_weights_file(self, pretrained, "encoder 'tiny'")

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            image = stage(image)
            features.append(image)
        return features


ENCODERS: Registry[Encoder] = Registry("encoder")
"""Encoder name -> ``factory(pretrained=..., output_stride=...)``."""

TIMM_ENCODERS = (
    "test_resnet",  # timm's ~0.4M-parameter ResNet: the real timm path, fast enough for tests
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "mobilenetv3_large_100",
    "mobilenetv3_small_100",
)
"""timm networks registered under their timm names."""

ENCODERS.register("tiny", TinyEncoder)
for timm_name in TIMM_ENCODERS:
    ENCODERS.register(timm_name, partial(TimmEncoder, timm_name))


def create_encoder(name: str, pretrained: Pretrained = False, output_stride: int = 32) -> Encoder:
    """The registered encoder ``name``; unknown names raise :class:`ConfigError`."""
    return ENCODERS.get(name)(pretrained=pretrained, output_stride=output_stride)
