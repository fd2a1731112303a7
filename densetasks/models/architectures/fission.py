"""Network fission: one encoder and decoder shared by every task up to a split point, separate
branches after it (Hickson et al., network fission, supplementary Sec. 1; the authors' code).

Encoder (ResNet-50 by default, output stride 16) + eASPP; skip refinements (1×1 conv + BN to
24 channels) from the encoder's /8 and /4 stages; two decoder stages, each a 2× transposed
conv + BN, concatenation with a skip and two 3×3 convs; a head per output: 1×1 conv + BN to the
task's channels (+ ReLU with ``head_relu``) and an 8×8 stride-4 transposed conv + BN back to
the input size.
``split`` chooses where the shared network splits into per-task branches::

    early      encoder ─ eASPP ┬ stage1 ─ stage2 ─ head   (per task: the whole decoder)
    early_mid  encoder ─ eASPP ─ stage1 ┬ stage2 ─ head   (per task: stage 2 and the head)
    mid        encoder ─ eASPP ─ stage1 ─ stage2 ┬ head   (per task: the head; proposed)
    late       encoder ─ eASPP ─ stage1 ─ stage2 ─ head(ΣC) ┬ split by channels

Auxiliary heads (1×1 conv + BN to the task's channels) read the 2×-upsampled map of each
decoder stage; the engine resizes them to the label (bilinear, ``Task.resize_output``) and adds
``weight × loss`` to the task's loss (supplementary Sec. 1.1 and 3). ``docs/fission.md``
lists what the paper leaves open and where we follow its code.
"""

from collections.abc import Sequence

import torch
from torch import nn

from densetasks.errors import ConfigError
from densetasks.models.base import Architecture, AuxiliaryOutput, Encoder, FeatureSpec
from densetasks.models.bottlenecks import EASPP, conv_bn, conv_bn_relu
from densetasks.models.heads import upsample

STAGES = ("stage1", "stage2")
"""The decoder stages, deep to shallow: stage ``k`` upsamples to the stride of skip ``k``."""

SKIP_STRIDES = (8, 4)
"""Strides of the encoder features refined into skips, in decoder order (supplementary
Sec. 1.1: the first and second skip refinements)."""

SHARED_STAGES = {"early": 0, "early_mid": 1, "mid": 2, "late": 2}
"""How many decoder stages every task shares, per split point (the authors' code:
``AdapNet_join``, ``AdapNet_earlymid``, ``AdapNet_shared``, ``AdapNet_fused``)."""

SKIP_CHANNELS = 24
"""Channels of each skip refinement (the authors' code: 1×1 conv + BN to 24)."""

FUSED = "fused"
"""Name of the single head of ``late`` fission (the authors' ``AdapNet_fused``)."""


class DecoderStage(nn.Module):
    """2× transposed conv (4×4, stride 2) + BN, concatenation with a skip, two 3×3 convs with
    BN + ReLU (supplementary Sec. 1.1; the authors' ``build_decoder``).

    Returns ``(upsampled, refined)``: the auxiliary head reads the upsampled map, as in the
    authors' code. The upsampled map is resized to the skip when the input size is not a
    multiple of 16 (the encoder rounds odd sizes up).
    """

    def __init__(self, in_channels: int, skip_channels: int, channels: int) -> None:
        super().__init__()
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(in_channels, channels, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.refine = nn.Sequential(
            conv_bn_relu(channels + skip_channels, channels, 3),
            conv_bn_relu(channels, channels, 3),
        )

    def forward(
        self, features: torch.Tensor, skip: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        upsampled = _fit(self.upsample(features), skip.shape[-2:])
        return upsampled, self.refine(torch.cat([upsampled, skip], dim=1))


class FissionHead(nn.Module):
    """1×1 conv + BN to ``out_channels``, then an 8×8 stride-4 transposed conv + BN: the 4×
    upsampling to the input ("a 1x1 convolutional transpose to reduce the number of feature
    channels to the desired output for the task which is then upsampled 4x", supplementary
    Sec. 1.1; the 8×8 stride-4 kernel and the BNs are the authors' code).

    ``relu`` adds the ReLU the authors' code puts after the 1×1 (``conv_batchN_relu``, which
    the paper does not mention). Off by default: on a task's few channels it is a bottleneck
    before the last, linear, upsampling — signed normals lose their negative half, and
    depth's single channel was 0 on 95 % of the pixels in a 3-task mobile run, whose depth
    then did not learn at all (docs/fission.md).
    """

    def __init__(self, in_channels: int, out_channels: int, relu: bool = False) -> None:
        super().__init__()
        self.reduce = (conv_bn_relu if relu else conv_bn)(in_channels, out_channels)
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(out_channels, out_channels, 8, stride=4, padding=2, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, features: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return _fit(self.upsample(self.reduce(features)), size)


class Fission(Architecture):
    """Network fission at ``split`` (``early``, ``early_mid``, ``mid``: the proposed default,
    ``late``) with auxiliary losses weighted ``aux_weights`` at the ends of decoder stages 1
    and 2 (0 disables one; supplementary Sec. 1.1: α1 = 0.6, α2 = 0.5).

    An auxiliary head is per task even where its stage is shared (a 1×1 conv + BN per output
    channel, which equals the authors' one head with ΣC channels in ``late`` fission).
    ``decoder_channels`` (256) is the decoder's width; skips have 24 channels, as the paper's.
    ``head_relu`` puts the authors' code's ReLU after each head's 1×1 reduction
    (:class:`FissionHead`; off by default).
    """

    def __init__(
        self,
        task_channels: dict[str, int],
        encoder: Encoder,
        split: str = "mid",
        aux_weights: Sequence[float] = (0.6, 0.5),
        decoder_channels: int = 256,
        head_relu: bool = False,
    ) -> None:
        _check_options(task_channels, encoder.feature_info[-1].stride, split, aux_weights)
        super().__init__(task_channels)
        self.split = split
        self.encoder = encoder
        self.bottleneck = EASPP(self.encoder.feature_info)
        self.skip_indices = [_deepest_at(self.encoder.feature_info, s) for s in SKIP_STRIDES]
        self.skips = nn.ModuleList(
            conv_bn(self.encoder.feature_info[index].channels, SKIP_CHANNELS)
            for index in self.skip_indices
        )
        widths = [self.bottleneck.feature_info[-1].channels, decoder_channels]

        def stages(indices: range) -> nn.ModuleDict:
            return nn.ModuleDict(
                {
                    STAGES[k]: DecoderStage(widths[k], SKIP_CHANNELS, decoder_channels)
                    for k in indices
                }
            )

        shared = SHARED_STAGES[split]
        self.decoder = stages(range(shared))
        self.task_decoders = nn.ModuleDict(
            {task: stages(range(shared, len(STAGES))) for task in task_channels}
        )
        head_channels = (
            {FUSED: sum(task_channels.values())} if split == "late" else dict(task_channels)
        )
        self.heads = nn.ModuleDict(
            {
                name: FissionHead(decoder_channels, out, head_relu)
                for name, out in head_channels.items()
            }
        )
        weights = dict(zip(STAGES, aux_weights, strict=True))
        self.aux_heads = nn.ModuleDict(
            {
                task: nn.ModuleDict(
                    {stage: conv_bn(decoder_channels, out) for stage in STAGES if weights[stage]}
                )
                for task, out in task_channels.items()
            }
        )
        self.auxiliary_outputs = tuple(
            AuxiliaryOutput(task, stage, float(weights[stage]))
            for task in task_channels
            for stage in STAGES
            if weights[stage]
        )
        _he_initialise([module for name, module in self.named_children() if name != "encoder"])

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.bottleneck(self.encoder(image))
        skips = [
            project(features[index])
            for project, index in zip(self.skips, self.skip_indices, strict=True)
        ]
        shared, shared_taps = _decode(self.decoder, features[-1], skips, {})
        decoded, taps = {}, {}
        for task, stages in self.task_decoders.items():
            decoded[task], taps[task] = _decode(stages, shared, skips, shared_taps)
        size = image.shape[-2:]
        if self.split == "late":
            fused = self.heads[FUSED](shared, size)
            outputs = dict(
                zip(
                    self.task_channels,
                    fused.split(list(self.task_channels.values()), dim=1),
                    strict=True,
                )
            )
        else:
            outputs = {task: self.heads[task](decoded[task], size) for task in self.task_channels}
        if self.training:
            for task, heads in self.aux_heads.items():
                outputs.update(
                    {f"{task}@{stage}": h(taps[task][stage]) for stage, h in heads.items()}
                )
        return outputs

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def shared_modules(self) -> list[nn.Module]:
        """What every task's output goes through, in data-flow order: encoder, skips, eASPP,
        the shared decoder stages and, in ``late`` fission, the one head."""
        shared = [self.encoder, self.skips, self.bottleneck]
        if self.decoder:
            shared.append(self.decoder)
        return [*shared, self.heads] if self.split == "late" else shared

    def task_modules(self, task: str) -> list[nn.Module]:
        """What only ``task``'s losses reach: its decoder stages, head and auxiliary heads."""
        own = [self.task_decoders[task], self.aux_heads[task]]
        return own if self.split == "late" else [*own, self.heads[task]]

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for module in self.shared_modules() for p in module.parameters()]

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The last convolution every task's output goes through: eASPP's 1×1 projection
        (``early``), the last 3×3 conv of the last shared decoder stage (``early_mid``,
        ``mid``) or the fused head's transposed conv (``late``). In ``early`` fission the skip
        refinements are shared too, in parallel to eASPP; GradNorm reads eASPP."""
        last = self.shared_modules()[-1]
        convolutions = [m for m in last.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
        return [convolutions[-1].weight]


def _check_options(
    task_channels: dict[str, int], output_stride: int, split: str, aux_weights: Sequence[float]
) -> None:
    """:class:`ConfigError` naming the config key of the first bad option."""
    if not task_channels:
        raise ConfigError("Fission needs at least one task")
    bad = {task: channels for task, channels in task_channels.items() if channels < 1}
    if bad:
        raise ConfigError(f"task channel counts must be positive, got {bad}")
    if split not in SHARED_STAGES:
        raise ConfigError(
            f"model.options.split: unknown split point {split!r}; known: {', '.join(SHARED_STAGES)}"
        )
    if output_stride != 16:
        raise ConfigError(
            f"model.output_stride: network fission decodes from output stride 16 "
            f"(two 2× stages and a 4× head), got {output_stride}"
        )
    if len(aux_weights) != len(STAGES) or any(weight < 0 for weight in aux_weights):
        raise ConfigError(
            "model.options.aux_weights: two weights >= 0 (decoder stages 1 and 2), "
            f"got {list(aux_weights)}"
        )


def _deepest_at(feature_info: list[FeatureSpec], stride: int) -> int:
    """Index of the deepest encoder feature at ``stride`` (the end of that resolution)."""
    indices = [index for index, spec in enumerate(feature_info) if spec.stride == stride]
    if not indices:
        strides = [spec.stride for spec in feature_info]
        raise ConfigError(
            f"network fission needs an encoder stage at stride {stride}, got {strides}"
        )
    return indices[-1]


def _decode(
    stages: nn.ModuleDict,
    features: torch.Tensor,
    skips: list[torch.Tensor],
    taps: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``stages`` (a contiguous part of :data:`STAGES`) on ``features``; returns the refined
    map and ``taps`` plus each stage's upsampled map (what the auxiliary heads read)."""
    taps = dict(taps)
    for name, stage in stages.items():
        taps[name], features = stage(features, skips[STAGES.index(name)])
    return features, taps


def _fit(features: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """``features`` resized (bilinear) to ``size`` when they differ, else unchanged."""
    return features if features.shape[-2:] == size else upsample(features, size)


def _he_initialise(modules: list[nn.Module]) -> None:
    """He initialisation of every newly learned convolution (supplementary Sec. 1.3: "for the
    newly learned layers we use He initialization"); the encoder keeps its own."""
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
