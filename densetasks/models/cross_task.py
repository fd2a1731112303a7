"""Cross-task building blocks of Lopes, Vu & de Charette, WACV 2023 ("DenseMTL").

* :class:`ThreeWaysDecoder`: one task's decoder of the "3-ways" network (Hoyer et al., after
  Monodepth2) that Lopes et al. build on (Sec. 4.1.1): blocks conv → upsample → concat skip →
  conv, 3×3 convolutions with reflection padding and ELU, 1×1 side outputs at its scales.
* :class:`XTAM`: the directional cross-task attention ``xTAM_{j→i}`` (Sec. 3.1, eqs. 1-4).
* :class:`MTEB`: the multi-task exchange block (Sec. 3.2.1, eq. 5).
* :class:`PadNetDistillation`: PAD-Net's attention-guided multi-modal distillation (Xu et al.,
  CVPR 2018), the exchange block of the PAD-Net baselines (Lopes et al., Sec. 4.1.1).

A *scale* ``s`` is a decoder resolution of ``1 / 2**s`` of the input (Lopes et al., Supp. A.1).
Exchange blocks map ``{task: [B, C, h, w]}`` to refined features of the same shapes.
"""

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from densetasks.errors import ConfigError
from densetasks.models.base import FeatureSpec
from densetasks.models.bottlenecks import conv_bn_relu

Attention = Literal["spatial", "channel", "both"]
Fusion = Literal["add", "concat", "prod"]
Downscale = Literal["paper", "code"]
Upsample = Literal["bilinear", "nearest"]
ATTENTIONS: tuple[str, ...] = get_args(Attention)
FUSIONS: tuple[str, ...] = get_args(Fusion)
DOWNSCALES: tuple[str, ...] = get_args(Downscale)
UPSAMPLES: tuple[str, ...] = get_args(Upsample)


def check_choice(key: str, value: str, choices: Sequence[str]) -> None:
    """Raise :class:`ConfigError` naming ``model.options.<key>`` unless ``value`` is a choice."""
    if value not in choices:
        raise ConfigError(f"model.options.{key} must be one of {', '.join(choices)}; got {value!r}")


def conv3x3_elu(in_channels: int, out_channels: int) -> nn.Sequential:
    """Reflection-padded 3×3 convolution + ELU, the unit of the 3-ways decoder (no batch norm)."""
    return nn.Sequential(
        nn.ReflectionPad2d(1), nn.Conv2d(in_channels, out_channels, 3), nn.ELU(inplace=True)
    )


def scale_size(size: Sequence[int], scale: int) -> tuple[int, int]:
    """The feature size at ``scale``: ``size`` halved ``scale`` times, rounding up as a stride-2
    convolution with padding does, so it matches the encoder feature of that stride."""
    height, width = size
    for _ in range(scale):
        height, width = -(-height // 2), -(-width // 2)
    return height, width


class DecoderBlock(nn.Module):
    """conv → upsample to the scale's size → concat the skip (if any) → conv.

    ``reduce`` replaces the first conv (a module from ``in_channels`` to ``out_channels``
    channels); by default a 3×3 conv + ELU.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        reduce: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.reduce = conv3x3_elu(in_channels, out_channels) if reduce is None else reduce
        self.fuse = conv3x3_elu(out_channels + skip_channels, out_channels)

    def forward(
        self, x: torch.Tensor, size: Sequence[int], skip: torch.Tensor | None
    ) -> torch.Tensor:
        x = self.reduce(x)
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="nearest")
        return self.fuse(x if skip is None else torch.cat([x, skip], dim=1))


class ThreeWaysDecoder(nn.Module):
    """One task's 3-ways decoder on a bottleneck's feature list (Lopes et al., Sec. 4.1.1).

    ``widths`` are the blocks' channels from the deepest scale ``len(widths) - 1`` to scale 0
    (full resolution); the block at scale ``s`` concatenates the deepest encoder feature of
    stride ``2**s`` that the bottleneck passes through (none at scale 0). ``side_scales``
    get a 1×1 side output besides the final one at scale 0. Everything is read from
    ``feature_info``; the bottleneck's stride must be at least ``2**(len(widths) - 1)``.
    ``first_reduce`` replaces the first conv of the deepest block and must give ``widths[0]``
    channels: the authors' code puts the task's own ASPP there (``aspp: per_task`` of the
    3-ways architectures).
    """

    def __init__(
        self,
        feature_info: list[FeatureSpec],
        widths: Sequence[int],
        out_channels: int,
        side_scales: Sequence[int] = (),
        first_reduce: nn.Module | None = None,
    ) -> None:
        super().__init__()
        deepest = feature_info[-1]
        if len(widths) < 2 or any(width < 1 for width in widths):
            raise ConfigError(
                f"model.options.decoder_widths needs two or more positive widths; got {widths}"
            )
        if deepest.stride < 2 ** (len(widths) - 1):
            raise ConfigError(
                f"model.options.decoder_widths: {len(widths)} blocks need an output stride of at "
                f"least {2 ** (len(widths) - 1)}; the encoder's is {deepest.stride}"
            )
        self.scales = tuple(range(len(widths) - 1, -1, -1))
        self.widths = dict(zip(self.scales, widths, strict=True))
        skips = {spec.stride: index for index, spec in enumerate(feature_info[:-1])}
        self.skip_index = {scale: skips.get(2**scale) for scale in self.scales}
        self.blocks = nn.ModuleDict()
        in_channels = deepest.channels
        for scale in self.scales:
            skip = self.skip_index[scale]
            skip_channels = 0 if skip is None else feature_info[skip].channels
            reduce = first_reduce if scale == self.scales[0] else None
            self.blocks[str(scale)] = DecoderBlock(
                in_channels, skip_channels, self.widths[scale], reduce
            )
            in_channels = self.widths[scale]
        self.outputs = nn.ModuleDict(
            {
                str(scale): nn.Conv2d(self.widths[scale], out_channels, 1)
                for scale in sorted({0, *side_scales})
            }
        )

    def block(
        self, scale: int, x: torch.Tensor, features: list[torch.Tensor], size: Sequence[int]
    ) -> torch.Tensor:
        """Run the block of ``scale`` on ``x`` (the previous block's output or the bottleneck's)
        for an input image of ``size``."""
        index = self.skip_index[scale]
        skip = None if index is None else features[index]
        target = scale_size(size, scale) if skip is None else skip.shape[-2:]
        return self.blocks[str(scale)](x, target, skip)

    def predict(self, scale: int, x: torch.Tensor) -> torch.Tensor:
        """The 1×1 output of ``scale`` (the final prediction at scale 0, a side output else)."""
        return self.outputs[str(scale)](x)


class SelfAttention(nn.Module):
    """``F_f(f) ⊙ σ(F_m(f))``, two 3×3 convolutions without bias: PAD-Net's attention-guided
    message (Xu et al., CVPR 2018) and the self branch of xTAM (Lopes et al., Sec. 3.1.1,
    eq. 3)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.features = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.mask = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        return self.features(source) * torch.sigmoid(self.mask(source))


def _project(in_channels: int, out_channels: int) -> nn.Sequential:
    """The 1×1 projections P_Q, P_K, P_V: convolution without bias + BN + ReLU."""
    return conv_bn_relu(in_channels, out_channels, kernel_size=1)


class CorrelationAttention(nn.Module):
    """The correlation-guided branch of ``xTAM_{j→i}`` (Lopes et al., Sec. 3.1.1, eqs. 1-2).

    ``K = P_Q(↓a f_i)``, ``Q = P_K(↓b g_j)``, ``V = P_V(↓b g_j)`` with ``g_j`` the directional
    features of the source; ``↓`` takes every ``a``-th pixel of the target (nearest) and
    max-pools the source by ``b``. Spatial attention (eq. 1): ``C = softmax(KᵀQ / √d)``,
    ``[B, N_i, N_j]``, each row a distribution over source positions, and
    ``xtask = ↑(V Cᵀ)``. Channel attention (the ablation of Sec. 4.3): both sides pooled by
    ``b``, ``C = softmax(K Qᵀ / √N)``, ``[B, d, d]``, and ``xtask = ↑(C V)``. The output is
    ``diag(α) · xtask`` with ``α`` per channel initialised to 0 (eq. 4). ``↑`` resizes to the
    target's size, ``bilinear`` (ours) or ``nearest`` (the authors' code).
    """

    def __init__(
        self,
        target_channels: int,
        source_channels: int,
        d: int,
        factors: tuple[int, int],
        kind: Literal["spatial", "channel"],
        upsample: Upsample = "bilinear",
    ) -> None:
        super().__init__()
        check_choice("upsample", upsample, UPSAMPLES)
        self.kind = kind
        self.upsample = upsample
        self.target_factor, self.source_factor = factors
        if kind == "channel":
            self.target_factor = self.source_factor
        self.target_projection = _project(target_channels, d)
        self.source_projection = _project(source_channels, d)
        self.value_projection = _project(source_channels, d)
        self.alpha = nn.Parameter(torch.zeros(1, d, 1, 1))

    def _pool(self, source: torch.Tensor) -> torch.Tensor:
        factor = self.source_factor
        return F.max_pool2d(source, factor, factor, ceil_mode=True) if factor > 1 else source

    def correlation(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """``C`` of eq. 1: ``[B, N_i, N_j]`` (spatial) or ``[B, d, d]`` (channel), rows sum to 1."""
        step = self.target_factor
        keys = self.target_projection(target[..., ::step, ::step]).flatten(2)
        queries = self.source_projection(self._pool(source)).flatten(2)
        if self.kind == "spatial":
            return torch.softmax(keys.transpose(1, 2) @ queries / math.sqrt(keys.shape[1]), -1)
        return torch.softmax(keys @ queries.transpose(1, 2) / math.sqrt(keys.shape[2]), -1)

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        correlation = self.correlation(target, source)
        values = self.value_projection(self._pool(source))
        if self.kind == "spatial":
            grid = target[..., :: self.target_factor, :: self.target_factor].shape[-2:]
            attended = values.flatten(2) @ correlation.transpose(1, 2)
        else:
            grid = values.shape[-2:]
            attended = correlation @ values.flatten(2)
        attended = attended.unflatten(2, tuple(grid))
        upsampled = F.interpolate(attended, size=target.shape[-2:], mode=self.upsample)
        return self.alpha * upsampled


class XTAM(nn.Module):
    """``xTAM_{j→i}``: what source task ``j`` offers target task ``i`` (Lopes et al., Sec. 3.1).

    The source is first read by a 3×3 conv + ReLU into directional features ``g_j`` (the
    authors' code; the paper's Fig. 2 only draws 1×1 "dimension" blocks). Output (eq. 4):
    ``[diag(α)·xtask (per attention type), self]``, the self branch (eq. 3) with half the
    target's channels, as the authors' code does. ``pair_projection`` adds the code's
    1×1 conv + BN + ReLU back to the target's channels on that concatenation (the code
    concatenates ``[self, xtask]``, the other order: the same function with the projection's
    input columns swapped). ``upsample`` is the ↑ of :class:`CorrelationAttention`.
    """

    def __init__(
        self,
        target_channels: int,
        source_channels: int,
        d: int,
        factors: tuple[int, int],
        attention: Attention = "spatial",
        self_branch: bool = True,
        pair_projection: bool = False,
        upsample: Upsample = "bilinear",
    ) -> None:
        super().__init__()
        kinds = ("spatial", "channel") if attention == "both" else (attention,)
        self.directional = nn.Sequential(
            nn.Conv2d(source_channels, target_channels, 3, padding=1), nn.ReLU(inplace=True)
        )
        self.correlations = nn.ModuleList(
            [
                CorrelationAttention(target_channels, target_channels, d, factors, kind, upsample)
                for kind in kinds
            ]
        )
        self_channels = target_channels // 2
        self.self_attention = SelfAttention(target_channels, self_channels) if self_branch else None
        concatenated = d * len(kinds) + (self_channels if self_branch else 0)
        self.projection = (
            _project(concatenated, target_channels) if pair_projection else nn.Identity()
        )
        self.out_channels = target_channels if pair_projection else concatenated

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        directional = self.directional(source)
        parts = [branch(target, directional) for branch in self.correlations]
        if self.self_attention is not None:
            parts.append(self.self_attention(directional))
        return self.projection(torch.cat(parts, dim=1))


class MTEB(nn.Module):
    """Multi-task exchange block at one decoder scale (Lopes et al., Sec. 3.2.1, eq. 5).

    For every target task ``i``: ``F_{→i}`` (1×1 conv + BN + ReLU) on the concatenated
    ``f_{j→i}`` of all other tasks, fused into ``f_i``: ``add`` ``f_i + F(...)`` (eq. 5),
    ``prod`` ``f_i ⊙ F(...)``, ``concat`` ``F([f_i, ...])`` (the ablations of Sec. 4.3, as the
    authors' code builds them). ``d`` defaults to the features' channel count; ``s`` and
    ``downscale`` give the attention's pooling: ``"paper"`` ↓s on the target and ↓s² on the
    source (eqs. 1-2), ``"code"`` ↓s on both (the authors' code, s = 4 at scale 1);
    ``upsample`` the ↑ of the attention's output (``"bilinear"``, or the code's
    ``"nearest"``).
    """

    def __init__(
        self,
        tasks: Sequence[str],
        channels: int,
        *,
        fusion: Fusion = "add",
        attention: Attention = "spatial",
        self_branch: bool = True,
        d: int | None = None,
        s: int = 2,
        downscale: Downscale = "paper",
        pair_projection: bool = False,
        upsample: Upsample = "bilinear",
    ) -> None:
        super().__init__()
        check_choice("fusion", fusion, FUSIONS)
        check_choice("attention", attention, ATTENTIONS)
        check_choice("downscale", downscale, DOWNSCALES)
        check_choice("upsample", upsample, UPSAMPLES)
        if s < 1 or (d is not None and d < 1):
            raise ConfigError(f"model.options.s and model.options.d must be >= 1; got {s}, {d}")
        if len(tasks) < 2:
            raise ConfigError(f"an exchange block needs two or more tasks; got {list(tasks)}")
        factors = (s, s * s if downscale == "paper" else s)
        self.fusion = fusion
        self.sources = {target: [t for t in tasks if t != target] for target in tasks}
        self.xtams = nn.ModuleDict(
            {
                f"{source}_to_{target}": XTAM(
                    channels,
                    channels,
                    d or channels,
                    factors,
                    attention,
                    self_branch,
                    pair_projection,
                    upsample,
                )
                for target, sources in self.sources.items()
                for source in sources
            }
        )
        pair = next(iter(self.xtams.values())).out_channels
        base = channels if fusion == "concat" else 0
        self.fuse = nn.ModuleDict(
            {
                target: _project(base + pair * len(sources), channels)
                for target, sources in self.sources.items()
            }
        )

    def directional(self, features: dict[str, torch.Tensor], target: str) -> torch.Tensor:
        """``[f_{j→i} for every source j]`` concatenated, for target ``i``."""
        return torch.cat(
            [
                self.xtams[f"{source}_to_{target}"](features[target], features[source])
                for source in self.sources[target]
            ],
            dim=1,
        )

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        refined = {}
        for target, base in features.items():
            messages = self.directional(features, target)
            if self.fusion == "concat":
                refined[target] = self.fuse[target](torch.cat([base, messages], dim=1))
            elif self.fusion == "prod":
                refined[target] = base * self.fuse[target](messages)
            else:
                refined[target] = base + self.fuse[target](messages)
        return refined


class PadNetDistillation(nn.Module):
    """PAD-Net's multi-modal distillation: ``f̃_i = f_i + Σ_{j≠i} F_f(f_j) ⊙ σ(F_m(f_j))``,
    one self-attention per ordered pair (Xu et al., CVPR 2018; as the survey of Vandenhende
    et al. that Lopes et al. take their PAD-Net baselines from builds it)."""

    def __init__(self, tasks: Sequence[str], channels: int) -> None:
        super().__init__()
        if len(tasks) < 2:
            raise ConfigError(f"an exchange block needs two or more tasks; got {list(tasks)}")
        self.sources = {target: [t for t in tasks if t != target] for target in tasks}
        self.messages = nn.ModuleDict(
            {
                f"{source}_to_{target}": SelfAttention(channels, channels)
                for target, sources in self.sources.items()
                for source in sources
            }
        )

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            target: base
            + sum(
                self.messages[f"{source}_to_{target}"](features[source])
                for source in self.sources[target]
            )
            for target, base in features.items()
        }
