"""The architectures of Lopes, Vu & de Charette, WACV 2023 and their baselines.

* ``three_ways``: shared encoder + ASPP, one 3-ways decoder per task, no exchange (the "MTL"
  baseline; with one task, the "STL" network).
* ``three_ways_mteb``: the same with an mTEB at chosen decoder scales ("Ours", Sec. 3.2).
* ``three_ways_padnet``: the same with PAD-Net's distillation in place of the mTEB
  ("3-ways_PAD-Net", Hoyer et al., as Lopes et al. retrain it, Sec. 4.1.1).
* ``padnet``: PAD-Net as the survey of Vandenhende et al. builds it (Xu et al., CVPR 2018):
  intermediate predictions on the encoder's deepest feature, distillation, final heads.

Multi-scale supervision (Supp. A.1, eq. 6): ``L = 1/|S| Σ_s Σ_t w_t L_t^s + Σ_t w_t L_t^final``.
Each supervised scale ``s`` adds the training-only output ``"<task>@scale<s>"``, taken
*before* the exchange block of that scale, with weight ``aux_weight / |S|``; the engine
multiplies it by the task's ``w_t`` like the final loss.
"""

from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck as ResidualBottleneck

from densetasks.errors import ConfigError
from densetasks.models.base import Architecture, AuxiliaryOutput, Encoder, FeatureSpec
from densetasks.models.bottlenecks import ASPP, create_bottleneck
from densetasks.models.cross_task import (
    MTEB,
    Attention,
    Downscale,
    Fusion,
    PadNetDistillation,
    ThreeWaysDecoder,
    Upsample,
    check_choice,
)

DECODER_WIDTHS = (256, 256, 128, 128, 64)
"""Block widths from the deepest scale (4, 1/16) to full resolution (Lopes et al., code)."""

AsppLayout = Literal["shared", "per_task"]
ASPP_LAYOUTS: tuple[str, ...] = get_args(AsppLayout)


class TaskASPP(nn.Module):
    """One task's own ASPP on the deepest encoder feature, in place of the first conv of the
    task's deepest decoder block (``aspp: per_task``, the authors' code of Lopes et al.):
    :class:`~densetasks.models.bottlenecks.ASPP` with its projection, ``channels`` out."""

    def __init__(
        self, feature_info: list[FeatureSpec], channels: int, options: dict[str, Any]
    ) -> None:
        super().__init__()
        if not options.get("project", True) or options.get("channels", channels) != channels:
            raise ConfigError(
                "model.options.aspp_options: with aspp: per_task each task's ASPP projects to "
                f"its deepest decoder block's width ({channels}, decoder_widths[0]); got {options}"
            )
        self.aspp = ASPP(feature_info, **{**options, "channels": channels, "project": True})

    def forward(self, deepest: torch.Tensor) -> torch.Tensor:
        return self.aspp.transform(deepest)


def _check_tasks(task_channels: dict[str, int]) -> None:
    if not task_channels:
        raise ConfigError("the 3-ways architectures need at least one task")
    bad = {task: channels for task, channels in task_channels.items() if channels < 1}
    if bad:
        raise ConfigError(f"task channel counts must be positive, got {bad}")


def check_scales(key: str, scales: Sequence[int], widths: Sequence[int]) -> tuple[int, ...]:
    """``scales`` deepest first, each a decoder scale with a block after it (1 .. n - 1)."""
    allowed = range(1, len(widths))
    bad = [scale for scale in scales if scale not in allowed]
    if bad or not scales:
        raise ConfigError(
            f"model.options.{key}: {list(scales)} must be a non-empty list of decoder scales "
            f"from {allowed.start} to {allowed.stop - 1} (the decoder has {len(widths)} blocks)"
        )
    return tuple(sorted(set(scales), reverse=True))


class ThreeWays(Architecture):
    """Shared encoder + ASPP (256 channels, rates 6/12/18 at output stride 16), then one
    :class:`~densetasks.models.cross_task.ThreeWaysDecoder` per task (Lopes et al., Sec. 4.1.1).

    ``supervised_scales`` get side outputs ``"<task>@scale<s>"`` in training (eq. 6);
    ``aspp_options`` go to :class:`~densetasks.models.bottlenecks.ASPP` (default
    ``{"project": True}``: DeepLabV3's projection back to 256 channels). ``aspp``:
    ``"shared"``, one ASPP after the encoder whose output every decoder's deepest block
    reads with its own 3×3 conv; ``"per_task"``, each task its own ASPP (:class:`TaskASPP`)
    in place of that conv, as the authors' code builds it (no shared bottleneck then).
    """

    def __init__(
        self,
        task_channels: dict[str, int],
        encoder: Encoder,
        decoder_widths: Sequence[int] = DECODER_WIDTHS,
        supervised_scales: Sequence[int] = (1,),
        aux_weight: float = 1.0,
        aspp_options: dict[str, Any] | None = None,
        aspp: AsppLayout = "shared",
    ) -> None:
        _check_tasks(task_channels)
        check_choice("aspp", aspp, ASPP_LAYOUTS)
        super().__init__(task_channels)
        self.supervised_scales = check_scales(
            "supervised_scales", supervised_scales, decoder_widths
        )
        if aux_weight < 0:
            raise ConfigError(f"model.options.aux_weight must be >= 0; got {aux_weight}")
        self.encoder = encoder
        options = {"project": True, **(aspp_options or {})}
        shared = aspp == "shared"
        self.bottleneck = create_bottleneck(
            "aspp" if shared else "none", self.encoder.feature_info, **(options if shared else {})
        )
        self.decoders = nn.ModuleDict(
            {
                task: ThreeWaysDecoder(
                    self.bottleneck.feature_info,
                    decoder_widths,
                    channels,
                    self.supervised_scales,
                    None
                    if shared
                    else TaskASPP(self.encoder.feature_info, decoder_widths[0], options),
                )
                for task, channels in task_channels.items()
            }
        )
        self.exchanges = nn.ModuleDict()
        """Exchange blocks by scale (``str``), run after that scale's block; none here."""
        weight = aux_weight / len(self.supervised_scales)
        self.auxiliary_outputs = tuple(
            AuxiliaryOutput(task, f"scale{scale}", weight)
            for scale in self.supervised_scales
            for task in task_channels
        )

    @property
    def scale_widths(self) -> dict[int, int]:
        """Decoder channels at every scale (the same for every task)."""
        return next(iter(self.decoders.values())).widths

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.bottleneck(self.encoder(image))
        size = image.shape[-2:]
        x = dict.fromkeys(self.decoders, features[-1])
        outputs = {}
        for scale in next(iter(self.decoders.values())).scales:
            x = {
                t: decoder.block(scale, x[t], features, size)
                for t, decoder in self.decoders.items()
            }
            if self.training and scale in self.supervised_scales:
                outputs.update(
                    {f"{t}@scale{scale}": d.predict(scale, x[t]) for t, d in self.decoders.items()}
                )
            if str(scale) in self.exchanges:
                x = self.exchanges[str(scale)](x)
        outputs.update({t: decoder.predict(0, x[t]) for t, decoder in self.decoders.items()})
        return outputs

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.bottleneck.parameters()]


class ThreeWaysMTEB(ThreeWays):
    """:class:`ThreeWays` with an :class:`~densetasks.models.cross_task.MTEB` after the decoder
    block of each of ``mteb_scales`` (default scale 1: 1/2 resolution, 128 channels, before the
    last block; Lopes et al., Sec. 3.2.1 and Table 3). Supervised scales default to the mTEB
    scales (Supp. A.1). ``fusion``, ``attention``, ``self_branch``, ``d``, ``s``,
    ``downscale``, ``pair_projection`` and ``upsample`` are the block's options;
    ``decoder_options`` are :class:`ThreeWays`' (``decoder_widths``, ``aux_weight``,
    ``aspp_options``, ``aspp``)."""

    def __init__(
        self,
        task_channels: dict[str, int],
        encoder: Encoder,
        mteb_scales: Sequence[int] = (1,),
        supervised_scales: Sequence[int] | None = None,
        fusion: Fusion = "add",
        attention: Attention = "spatial",
        self_branch: bool = True,
        d: int | None = None,
        s: int = 2,
        downscale: Downscale = "paper",
        pair_projection: bool = False,
        upsample: Upsample = "bilinear",
        **decoder_options: Any,
    ) -> None:
        scales = _exchange_scales("mteb_scales", mteb_scales, decoder_options)
        super().__init__(
            task_channels,
            encoder,
            supervised_scales=scales if supervised_scales is None else supervised_scales,
            **decoder_options,
        )
        for scale in scales:
            self.exchanges[str(scale)] = MTEB(
                list(task_channels),
                self.scale_widths[scale],
                fusion=fusion,
                attention=attention,
                self_branch=self_branch,
                d=d,
                s=s,
                downscale=downscale,
                pair_projection=pair_projection,
                upsample=upsample,
            )


class ThreeWaysPadNet(ThreeWays):
    """:class:`ThreeWays` with PAD-Net's distillation after the decoder block of each of
    ``padnet_scales`` (default scale 1, where the mTEB sits, so that the two compare block
    for block); supervised scales default to the PAD-Net scales; ``decoder_options`` are
    :class:`ThreeWays`'."""

    def __init__(
        self,
        task_channels: dict[str, int],
        encoder: Encoder,
        padnet_scales: Sequence[int] = (1,),
        supervised_scales: Sequence[int] | None = None,
        **decoder_options: Any,
    ) -> None:
        scales = _exchange_scales("padnet_scales", padnet_scales, decoder_options)
        super().__init__(
            task_channels,
            encoder,
            supervised_scales=scales if supervised_scales is None else supervised_scales,
            **decoder_options,
        )
        for scale in scales:
            self.exchanges[str(scale)] = PadNetDistillation(
                list(task_channels), self.scale_widths[scale]
            )


def _exchange_scales(
    key: str, scales: Sequence[int], decoder_options: dict[str, Any]
) -> tuple[int, ...]:
    """The decoder scales an exchange block follows, checked against the decoder's widths."""
    return check_scales(key, scales, decoder_options.get("decoder_widths", DECODER_WIDTHS))


def _residual_stack(in_channels: int, channels: int) -> nn.Sequential:
    """Two ResNet bottleneck blocks to ``channels`` (the survey's PAD-Net heads)."""
    downsample = (
        None
        if in_channels == channels
        else nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels)
        )
    )
    planes = channels // ResidualBottleneck.expansion
    return nn.Sequential(
        ResidualBottleneck(in_channels, planes, downsample=downsample),
        ResidualBottleneck(channels, planes),
    )


class PadNet(Architecture):
    """PAD-Net (Xu et al., CVPR 2018) as Lopes et al. retrain it from the survey of
    Vandenhende et al.: per task two residual blocks on the encoder's deepest feature and a
    1×1 intermediate prediction ``"<task>@initial"`` (training only, weight ``aux_weight``),
    :class:`~densetasks.models.cross_task.PadNetDistillation` of those features, then per
    task two residual blocks and a 1×1 conv, bilinearly upsampled to the image.
    """

    def __init__(
        self,
        task_channels: dict[str, int],
        encoder: Encoder,
        channels: int = 256,
        aux_weight: float = 1.0,
    ) -> None:
        _check_tasks(task_channels)
        if channels < 4 or channels % 4:
            raise ConfigError(f"model.options.channels must be a multiple of 4; got {channels}")
        super().__init__(task_channels)
        self.encoder = encoder
        deepest = self.encoder.feature_info[-1].channels
        self.initial = nn.ModuleDict(
            {task: _residual_stack(deepest, channels) for task in task_channels}
        )
        self.initial_outputs = nn.ModuleDict(
            {task: nn.Conv2d(channels, out, 1) for task, out in task_channels.items()}
        )
        self.distillation = PadNetDistillation(list(task_channels), channels)
        self.heads = nn.ModuleDict(
            {
                task: nn.Sequential(
                    _residual_stack(channels, channels), nn.Conv2d(channels, out, 1)
                )
                for task, out in task_channels.items()
            }
        )
        self.auxiliary_outputs = tuple(
            AuxiliaryOutput(task, "initial", aux_weight) for task in task_channels
        )

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        deepest = self.encoder(image)[-1]
        features = {task: block(deepest) for task, block in self.initial.items()}
        outputs = {}
        if self.training:
            outputs = {f"{t}@initial": self.initial_outputs[t](f) for t, f in features.items()}
        for task, refined in self.distillation(features).items():
            outputs[task] = F.interpolate(
                self.heads[task](refined), size=image.shape[-2:], mode="bilinear"
            )
        return outputs

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())
