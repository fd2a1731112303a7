"""A hierarchical timm network (ResNet, ConvNeXt, Swin, EfficientNet, RegNet, HRNet, ...) as an
encoder: timm's ``features_only`` extractor, its features NCHW, its stages run by name.

**Features.** ``feature_info`` is timm's own (channels, stride) per feature. Swin, MaxViT and
MambaOut compute in NHWC; their features are handed out NCHW (a permuted view, no copy) and a
stage that starts from one permutes it back.

**Output stride.** 8 and 16 dilate the last stages where the family can (timm's
``output_stride``: ResNet, ConvNeXt, EfficientNet, MobileNetV3, RegNet, ...). A family that
cannot (Swin, MaxViT, HRNet) raises a :class:`ConfigError` naming the strides it has.

**Input size.** Any: ``dynamic_img_size`` is set where the network has it (Swin then builds
its attention masks per input and pads its windows), and an input is padded with zeros at the
bottom and right to a multiple of a strict patch embedding's patch size (Swin) or, for HRNet,
whose fusions add upsampled coarse branches to fine ones, of its deepest stride. MaxViT and
CoAtNet partition fixed grids and need their ``img_size`` (an ``encoder_options`` key).

**Stages.** Every feature extractor that runs its modules as one chain is split into stages
by module *names*, resolved at call time (so a module replaced later, such as a
``SyncBatchNorm`` conversion, is the one run, and the state dict keys stay timm's): timm's
``FeatureListNet`` (ResNet, ConvNeXt, Swin, RegNet, MaxViT, ...) ends a stage at each returned
layer; ``EfficientNetFeatures`` and ``MobileNetV3Features`` are the stem, then their blocks up to
each returned one. Others (HRNet, whose features come out of parallel branches) have no stage
list: the whole network runs, and asking for part of it is a :class:`ConfigError` saying why.
"""

from collections.abc import Mapping
from typing import Any

import timm
import torch
from timm.models import EfficientNetFeatures, FeatureListNet, MobileNetV3Features
from timm.models.hrnet import HighResolutionNetFeatures
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from densetasks.errors import ConfigError
from densetasks.models._encoder_tools import Pretrained, check_output_stride, run_split, stage_end
from densetasks.models.base import FeatureSpec
from densetasks.models.timm_network import (
    TimmNetworkEncoder,
    describe,
    hub_error,
    with_size_defaults,
)
from densetasks.models.timm_weights import load_timm_weights


def _split_after(names: list[str], ends: list[int]) -> list[tuple[str, ...]]:
    """``names`` cut into consecutive groups, group ``k`` ending before ``names[ends[k]]``."""
    return [tuple(names[begin:end]) for begin, end in zip([0, *ends[:-1]], ends, strict=True)]


def _feature_list_stages(model: FeatureListNet) -> list[tuple[str, ...]]:
    """Stages of a ``FeatureListNet``: its children in order, each stage ending at a returned
    layer (``return_layers``), exactly as its own forward runs them."""
    names = list(model.keys())
    return _split_after(names, [names.index(name) + 1 for name in model.return_layers])


def _block_stages(model: MobileNetV3Features | EfficientNetFeatures) -> list[tuple[str, ...]]:
    """Stages of ``MobileNetV3Features`` / ``EfficientNetFeatures``: the stem, then its blocks,
    a stage ending after the ``n`` blocks named by each key ``n`` of ``_stage_out_idx`` (0: the
    stem's output itself); blocks after the last returned one are never run, as they feed no
    feature."""
    stem = [name for name in ("conv_stem", "bn1", "act1") if hasattr(model, name)]
    names = stem + [f"blocks.{index}" for index in range(len(model.blocks))]
    return _split_after(names, [len(stem) + blocks for blocks in sorted(model._stage_out_idx)])


def timm_stages(model: nn.Module) -> list[tuple[str, ...]] | str:
    """Module names of each stage of a timm feature extractor, shallow to deep, or why it has
    no stage list."""
    if isinstance(model, FeatureListNet):
        return _feature_list_stages(model)
    if isinstance(model, MobileNetV3Features | EfficientNetFeatures):
        if model.feature_hooks is None:
            return _block_stages(model)
        return f"timm {type(model).__name__} reads its features with hooks inside its blocks"
    return (
        f"timm {type(model).__name__} does not run its features as one chain of stages, each "
        "taking the previous one's output (HRNet fuses parallel branches into every feature)"
    )


def _input_multiple(model: nn.Module) -> int:
    """The size an input must be a multiple of: a strict patch embedding's patch size; for
    HRNet, which adds upsampled low-resolution branches to high-resolution ones, its deepest
    stride; else 1."""
    if isinstance(model, HighResolutionNetFeatures):
        return model.feature_info.reduction()[-1]
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is None or getattr(patch_embed, "dynamic_img_pad", True):
        return 1
    return max(patch_embed.patch_size)


class TimmEncoder(TimmNetworkEncoder):
    """A hierarchical timm network created with ``features_only=True`` and an output stride.

    ``options`` are timm keyword arguments (``model.encoder_options``): the network's own
    (``drop_path_rate``, ``img_size``, ...) and ``out_indices`` (which features).
    """

    def __init__(
        self, name: str, pretrained: Pretrained = False, output_stride: int = 32, **options: Any
    ) -> None:
        super().__init__()
        check_output_stride(output_stride)
        self.name = name
        full = describe(name, options)
        options = with_size_defaults(full, options)
        self.model = _features(name, full, pretrained is True, output_stride, options)
        if pretrained is not False and pretrained is not True:
            load_timm_weights(self.model, full, name, options, pretrained)
        self.feature_info = [
            FeatureSpec(channels, stride)
            for channels, stride in zip(
                self.model.feature_info.channels(), self.model.feature_info.reduction(), strict=True
            )
        ]
        self.channels_last_features = getattr(self.model, "output_fmt", "NCHW") == "NHWC"
        self.input_multiple = _input_multiple(self.model)
        self.grad_checkpointing = False
        self._stages = timm_stages(self.model)
        self.read_training_practice(full)

    def forward_stages(
        self, inputs: torch.Tensor, start: int = 0, end: int | None = None
    ) -> list[torch.Tensor]:
        """Run stages ``start .. end - 1`` on ``inputs`` (see :class:`Encoder`)."""
        end = stage_end(start, end, len(self.feature_info))
        if start == 0:
            inputs = self._pad(inputs)
        elif self.channels_last_features:
            inputs = inputs.permute(0, 2, 3, 1)
        if isinstance(self._stages, str):
            if (start, end) != (0, len(self.feature_info)):
                raise ConfigError(
                    f"encoder {self.name!r} cannot run stages {start}..{end - 1} on their own: "
                    f"{self._stages}; choose an architecture that does not branch inside the "
                    "encoder"
                )
            return [self._nchw(feature) for feature in self.model(inputs)]
        features = []
        for names in self._stages[start:end]:
            for module_name in names:
                inputs = self._run(self.model.get_submodule(module_name), inputs)
            features.append(self._nchw(inputs))
        return features

    def forward_stage_blocks(
        self, inputs: torch.Tensor, stage: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage ``stage``'s feature before its last block and its output (see
        :class:`~densetasks.models.base.Encoder`; a block as :func:`run_split` counts it)."""
        stage_end(stage, stage + 1, len(self.feature_info))
        if isinstance(self._stages, str):
            raise ConfigError(
                f"encoder {self.name!r} cannot split stage {stage} before its last block: "
                f"{self._stages}"
            )
        if stage == 0:
            inputs = self._pad(inputs)
        elif self.channels_last_features:
            inputs = inputs.permute(0, 2, 3, 1)
        modules = [self.model.get_submodule(name) for name in self._stages[stage]]
        before, output = run_split(modules, inputs)
        return self._nchw(before), self._nchw(output)

    def _run(self, module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """``module(inputs)``, through activation checkpointing when it is on, the module does
        not checkpoint its own blocks (timm stages with ``grad_checkpointing``) and is not
        in-place (recomputing it would see its own output)."""
        if (
            self.grad_checkpointing
            and torch.is_grad_enabled()
            and not hasattr(module, "grad_checkpointing")
            and not getattr(module, "inplace", False)
        ):
            return checkpoint(module, inputs, use_reentrant=False)
        return module(inputs)

    def _pad(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` padded with zeros at the bottom and right to :attr:`input_multiple`."""
        multiple = self.input_multiple
        height, width = image.shape[-2:]
        bottom, right = -height % multiple, -width % multiple
        return F.pad(image, (0, right, 0, bottom)) if bottom or right else image

    def _nchw(self, feature: torch.Tensor) -> torch.Tensor:
        return feature.permute(0, 3, 1, 2) if self.channels_last_features else feature

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in the backward pass to save memory: inside timm stages that
        support it (their blocks, timm's ``grad_checkpointing``), else module by module of the
        stage list (timm's ``FeatureListNet`` practice); a network without a stage list
        through timm's own switch (HRNet has none: a :class:`ConfigError`)."""
        if isinstance(self._stages, str):
            try:
                self.model.set_grad_checkpointing(enable)
            except AssertionError as error:  # timm's HRNet: "gradient checkpointing not supported"
                raise ConfigError(
                    f"encoder {self.name!r}: timm {type(self.model).__name__} has no gradient "
                    f"checkpointing ({error}); set train.grad_checkpointing: false"
                ) from None
        self.grad_checkpointing = enable
        if isinstance(self._stages, str):
            return
        for module in self.model.modules():
            if module is not self.model and hasattr(module, "grad_checkpointing"):
                module.grad_checkpointing = enable


def _features(
    name: str, full: nn.Module, hub: bool, output_stride: int, options: Mapping[str, Any]
) -> nn.Module:
    """timm's feature extractor of ``name`` at ``output_stride``: dilated where the family can
    dilate, else the undilated network whose ``out_indices`` stop at that stride. Any other
    output stride, or hub weights out of reach, is a :class:`ConfigError` saying so."""
    dilation = {"output_stride": output_stride} if output_stride != 32 else {}
    try:
        model = _create(name, full, hub, {**dilation, **options})
    except (TypeError, AssertionError):  # the family takes no output_stride (HRNet asserts)
        if not dilation:
            raise
        model = _create(name, full, hub, dict(options))
    strides = model.feature_info.reduction()
    if strides[-1] != output_stride:
        plain = [info["reduction"] for info in full.feature_info]
        within = [index for index, stride in enumerate(plain) if stride <= output_stride]
        raise ConfigError(
            f"model.output_stride: encoder {name!r} (timm {type(full).__name__}) cannot dilate "
            f"to output stride {output_stride}; its features have strides "
            f"{', '.join(map(str, strides))}; use output stride {strides[-1]}, or stop at "
            f"stride {output_stride} with model.encoder_options.out_indices: {within}"
        )
    return model


def _create(name: str, full: nn.Module, hub: bool, options: Mapping[str, Any]) -> nn.Module:
    """``timm.create_model(name, features_only=True, ...)``; unreachable hub weights and
    networks without feature extraction are :class:`ConfigError`."""
    try:
        return timm.create_model(name, pretrained=hub, features_only=True, **options)
    except OSError as error:
        raise hub_error(name, full, error) from error
    except RuntimeError as error:
        raise ConfigError(
            f"encoder {name!r}: timm {type(full).__name__} has no feature extraction "
            f"(features_only): {error}"
        ) from error
