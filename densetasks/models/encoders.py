"""Encoders: any timm network by name, and a tiny conv net for tests.

Every encoder returns its feature maps shallow to deep (never the input image) and describes
them in :attr:`~densetasks.models.base.Encoder.feature_info` as ``(channels, stride)``.
The deepest stride is the *output stride*: 8, 16 or 32. Below 32 the last stages keep their
resolution and dilate their convolutions instead (DeepLab practice; Kendall et al., CVPR 2018,
use a ResNet-101 at output stride 8, App. A) where the family can dilate.

:func:`create_encoder` resolves a name: densetasks's own ``tiny``, else timm's network of that
name — a hierarchical one through :class:`~densetasks.models.timm_encoder.TimmEncoder`, a plain
one-stride ViT through :class:`~densetasks.models.vit_pyramid.ViTPyramidEncoder` (a feature
pyramid from four of its blocks). ``options`` (``model.encoder_options``) are timm keyword
arguments checked against the network's signature.

``pretrained`` is ``False`` (random init), ``True`` (timm hub weights, needs the network; the
offline error says what to download and where) or the path of a local weights file: the timm
network's state dict as timm distributes it (``.safetensors``, ``.pth``/``.bin``, ``.npz`` for
the ViTs timm reads NumPy checkpoints into). Keys of modules the encoder does not have (the
classification head) are ignored; any other missing or unexpected key is an error that names
the file and the keys.

Every encoder also runs any contiguous range of its stages (``forward_stages``), so that an
architecture can share the first stages and branch after them.
"""

from functools import partial
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from densetasks._registry import Registry
from densetasks.errors import ConfigError
from densetasks.models._encoder_tools import (
    Pretrained,
    check_output_stride,
    load_checked,
    read_weights_file,
    run_split,
    stage_end,
)
from densetasks.models.base import Encoder, FeatureSpec
from densetasks.models.timm_encoder import TimmEncoder
from densetasks.models.timm_network import describe, single_stride, unknown_name
from densetasks.models.vit_pyramid import ViTPyramidEncoder


def load_weights_file(module: nn.Module, path: str | Path, what: str) -> None:
    """Load the state dict in ``path`` into ``module``, failing with the keys that differ.

    Keys whose top-level module does not exist in ``module`` are ignored; every other mismatch
    raises :class:`ConfigError` naming the file.
    """
    state_dict = read_weights_file(path, what)
    own_modules = {name for name, _ in module.named_children()}
    foreign = frozenset(key for key in state_dict if key.split(".")[0] not in own_modules)
    load_checked(module, state_dict, path, what, ignored=foreign)


def timm_encoder(
    name: str, pretrained: Pretrained = False, output_stride: int = 32, **options: Any
) -> Encoder:
    """timm's network ``name`` as an encoder: a one-stride network (a plain ViT) as a
    :class:`ViTPyramidEncoder`, any other as a :class:`TimmEncoder`."""
    if not timm.is_model(name):
        raise unknown_name(name, ENCODERS.names())
    kind = ViTPyramidEncoder if single_stride(describe(name, options)) else TimmEncoder
    return kind(name, pretrained=pretrained, output_stride=output_stride, **options)


class TinyEncoder(Encoder):
    """Five conv-BN-ReLU stages (strides 2 to 32, a few thousand parameters) for fast tests.

    It follows the same output-stride rule as the timm ResNets: a stage that would go below
    the output stride keeps stride 1 and doubles the dilation instead.
    """

    WIDTHS = (8, 8, 16, 16, 32)

    def __init__(self, pretrained: Pretrained = False, output_stride: int = 32) -> None:
        super().__init__()
        check_output_stride(output_stride)
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
                        in_channels,
                        width,
                        3,
                        stride=step,
                        padding=dilation,
                        dilation=dilation,
                        bias=False,
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

    def forward_stages(
        self, inputs: torch.Tensor, start: int = 0, end: int | None = None
    ) -> list[torch.Tensor]:
        """Run stages ``start .. end - 1`` on ``inputs`` (see :class:`Encoder`)."""
        end = stage_end(start, end, len(self.feature_info))
        features = []
        for stage in self.stages[start:end]:
            inputs = stage(inputs)
            features.append(inputs)
        return features

    def parameter_layers(self) -> tuple[dict[str, int], int]:
        """Stage ``k``'s parameters at depth ``k``; the decoders above them at 5."""
        return {name: int(name.split(".")[1]) for name, _ in self.named_parameters()}, len(
            self.stages
        )

    def forward_stage_blocks(
        self, inputs: torch.Tensor, stage: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage ``stage``'s conv + BN output (before its last block, the ReLU) and its output."""
        stage_end(stage, stage + 1, len(self.feature_info))
        return run_split([self.stages[stage]], inputs)


ENCODERS: Registry[Encoder] = Registry("encoder")
"""densetasks's own encoders and the timm networks its configs and tests name; any other timm
name resolves through timm (:func:`create_encoder`)."""

TIMM_ENCODERS = (
    "test_resnet",  # timm's ~0.4M-parameter ResNet: the real timm path, fast enough for tests
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "mobilenetv3_large_100",
    "mobilenetv3_small_100",
)
"""timm networks registered under their timm names (the ones the tests parametrise over)."""

ENCODERS.register("tiny", TinyEncoder)
for timm_name in TIMM_ENCODERS:
    ENCODERS.register(timm_name, partial(timm_encoder, timm_name))


def create_encoder(
    name: str, pretrained: Pretrained = False, output_stride: int = 32, **options: Any
) -> Encoder:
    """The encoder ``name``: a registered one, else timm's network of that name; an unknown
    name or option raises :class:`ConfigError`. The encoder remembers how it was built
    (:meth:`Encoder.rebuild`)."""
    factory = ENCODERS.get(name) if name in ENCODERS else partial(timm_encoder, name)
    if name in ENCODERS and options:
        ENCODERS.check_options(
            name, config_path="model.encoder_options", pretrained=pretrained, **options
        )
    encoder = factory(pretrained=pretrained, output_stride=output_stride, **options)
    encoder.factory = partial(create_encoder, name, pretrained, output_stride, **options)
    return encoder


def encoders_of(model: nn.Module) -> list[Encoder]:
    """Every encoder inside ``model`` (several for one-encoder-per-task architectures)."""
    return [module for module in model.modules() if isinstance(module, Encoder)]
