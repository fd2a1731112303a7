"""Building blocks of the CompositeTasking network (Popovic et al., CVPR 2021, Sec. 3.2).

* :class:`TaskRepresentation`: one learned 128-d embedding per task, broadcast by the Task
  Palette into an embedding map ``E`` and a pyramid of it at every decoder scale.
* :class:`TaskComposition`: conv -> BatchNorm without affine -> ``γ(x, y)·h + β(x, y)`` with
  ``γ``, ``β`` predicted per pixel from ``E`` -> LeakyReLU. Without an embedding it is the
  plain conv -> affine BN -> LeakyReLU block of the baselines (STN, MHN, MN).
* :class:`CompositionDecoder`: the U-Net-like decoder built from those blocks over any
  encoder's ``feature_info``, ending in a 3-channel output.
"""

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from densetasks.data.sample import IGNORE_INDEX
from densetasks.models.base import FeatureSpec

TASK_NET_SLOPE = 0.2
"""LeakyReLU slope of the task representation network (authors' code)."""

DECODER_WIDTHS = (512, 256, 256, 128, 64)
"""Decoder widths deepest first; the last is the full-resolution block (authors' code)."""


class TaskRepresentation(nn.Module):
    """Task codes -> 6 × (Linear + LeakyReLU 0.2) -> one embedding per task (Sec. 3.2, supp. E).

    Task ``k``'s code has ones at ``code_length·k .. code_length·(k+1) - 1`` of a vector of
    length ``code_length·K``, L2-normalised, so that codes of different tasks are orthogonal.
    The codes are fixed (a non-persistent buffer); only the fully connected net learns.
    """

    def __init__(
        self, num_tasks: int, channels: int = 128, code_length: int = 20, layers: int = 6
    ) -> None:
        super().__init__()
        codes = torch.block_diag(*[torch.ones(1, code_length)] * num_tasks)
        self.register_buffer("codes", F.normalize(codes, dim=1), persistent=False)
        widths = [code_length * num_tasks] + [channels] * layers
        self.net = nn.Sequential(
            *(
                module
                for inputs, outputs in pairwise(widths)
                for module in (nn.Linear(inputs, outputs), nn.LeakyReLU(TASK_NET_SLOPE))
            )
        )
        self.channels = channels

    def forward(self) -> torch.Tensor:
        """Every task's embedding ``[K, channels]``, row ``k`` for palette id ``k``."""
        return self.net(self.codes)

    def embedding_map(self, palette: torch.Tensor) -> torch.Tensor:
        """Broadcast by the palette ``int64 [B, H, W]`` into ``E``: ``[B, channels, H, W]``.

        A pixel with :data:`IGNORE_INDEX` (no task requested) gets the zero vector, as in the
        authors' code: the decoder then sees ``γ``, ``β`` of a zero embedding there, and no
        loss reads that pixel. Any other id outside ``0 .. K - 1`` is a :class:`ValueError`.
        """
        num_tasks = self.codes.shape[0]
        requested = palette != IGNORE_INDEX
        if bool(((palette < 0) | (palette >= num_tasks))[requested].any()):
            raise ValueError(
                f"palette ids must be in 0..{num_tasks - 1} or {IGNORE_INDEX} (no task), got "
                f"{sorted(palette[requested].unique().tolist())}"
            )
        table = torch.cat([self(), self.codes.new_zeros(1, self.channels)])
        index = torch.where(requested, palette, num_tasks)
        return table[index].permute(0, 3, 1, 2)


def embedding_pyramid(
    embedding: torch.Tensor, sizes: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], torch.Tensor]:
    """``E`` at every size in ``sizes`` (largest first), each bilinearly downsampled from the
    one before it (supp. E, authors' code: halving; an exact halving is the 2×2 mean).

    Sizes need not be powers of two: an encoder stage of an odd-sized input rounds up, and
    the map is then resampled to that size.
    """
    pyramid = {tuple(embedding.shape[-2:]): embedding}
    previous = embedding
    for size in sizes:
        size = tuple(size)
        if size not in pyramid:
            pyramid[size] = F.interpolate(previous, size=size, mode="bilinear")
        previous = pyramid[size]
    return pyramid


class TaskComposition(nn.Module):
    """conv(k×k) -> BN -> affine -> LeakyReLU; the affine is per pixel from ``E`` (Sec. 3.2).

    With ``embedding_channels`` set: BatchNorm without own affine, then ``γ·h + β`` where
    ``γ``, ``β`` come from ``E`` through one shared 1×1 conv to ``hidden`` channels +
    LeakyReLU and a separate 1×1 conv each (eq. 1; one shared conv was best, supp. Table 7).
    ``γ`` starts at weight 0, bias 1 and ``β`` at weight 0, bias 0, so a fresh block computes
    exactly conv -> BN -> LeakyReLU whatever the palette (the authors set only the biases).

    With ``embedding_channels=None``: a plain affine BatchNorm, the block of the baselines.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        embedding_channels: int | None,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        conditioned = embedding_channels is not None
        self.norm = nn.BatchNorm2d(out_channels, affine=not conditioned)
        self.shared: nn.Module | None = None
        if conditioned:
            self.shared = nn.Sequential(nn.Conv2d(embedding_channels, hidden, 1), nn.LeakyReLU())
            self.gamma = nn.Conv2d(hidden, out_channels, 1)
            self.beta = nn.Conv2d(hidden, out_channels, 1)
            for layer, bias in ((self.gamma, 1.0), (self.beta, 0.0)):
                nn.init.zeros_(layer.weight)
                nn.init.constant_(layer.bias, bias)
        self.activation = nn.LeakyReLU()

    def forward(
        self, features: torch.Tensor, embedding: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``features [B, C_in, h, w]`` (and ``E`` at ``h × w``) -> ``[B, C_out, h, w]``."""
        hidden = self.norm(self.conv(features))
        if self.shared is not None:
            if embedding is None:
                raise ValueError("a conditioned TaskComposition block needs the embedding map")
            code = self.shared(embedding)
            hidden = self.gamma(code) * hidden + self.beta(code)
        return self.activation(hidden)


def _condition_hidden(stride: int) -> int:
    """Hidden width of the γ/β net at a stride: 128 down to 1/4, 256 deeper (authors' code)."""
    return 128 if stride <= 4 else 256


def _level_widths(widths: Sequence[int], levels: int) -> list[int]:
    """Output widths of ``levels`` fusion blocks, deepest first, from ``widths`` (deepest first,
    the full-resolution width last). The shallow levels keep the authors' widths; an encoder
    with more stages repeats the deepest width, one with fewer drops the deepest ones."""
    fusion = list(widths[:-1])
    return ([fusion[0]] * levels + fusion)[-levels:] if levels else []


class CompositionDecoder(nn.Module):
    """Encoder features (+ ``E``) -> ``[B, out_channels, H, W]`` (Fig. 2 / Fig. 12, supp.).

    Built from ``feature_info`` (shallow to deep), as the authors' decoder for ResNet-34:

    * every encoder feature passes a 1×1 composition block (the skips; channels kept);
    * from the deepest, each level is upsampled bilinearly to the next shallower feature,
      concatenated with its skip and fused by a 3×3 block to the level's width
      (``widths``: 512, 256, 256, 128 for a five-stage encoder);
    * the last level is upsampled to the image and concatenated with the image skip (two
      3×3 blocks, 3 -> C_0 -> C_0, C_0 = the first stage's channels: 64 for ResNet-34), fused
      by a 3×3 block to ``widths[-1]`` (64), then a 1×1 conv gives ``out_channels``.

    With ``embedding_channels=None`` every block is the plain one (the baselines' decoder).
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureSpec],
        embedding_channels: int | None,
        widths: Sequence[int] = DECODER_WIDTHS,
        out_channels: int = 3,
        skip_kernel: int = 1,
        decoder_kernel: int = 3,
    ) -> None:
        super().__init__()
        specs = list(feature_info)

        def block(inputs: int, outputs: int, kernel: int, stride: int) -> TaskComposition:
            hidden = _condition_hidden(stride)
            return TaskComposition(inputs, outputs, kernel, embedding_channels, hidden)

        self.skips = nn.ModuleList(
            block(spec.channels, spec.channels, skip_kernel, spec.stride) for spec in specs
        )
        fusions, channels = [], specs[-1].channels
        level_widths = _level_widths(widths, len(specs) - 1)
        for spec, width in zip(reversed(specs[:-1]), level_widths, strict=True):
            fusions.append(block(channels + spec.channels, width, decoder_kernel, spec.stride))
            channels = width
        self.fusions = nn.ModuleList(fusions)
        first = specs[0].channels
        self.image_skip = nn.ModuleList(
            [block(3, first, decoder_kernel, 1), block(first, first, decoder_kernel, 1)]
        )
        self.final = block(channels + first, widths[-1], decoder_kernel, 1)
        self.head = nn.Conv2d(widths[-1], out_channels, 1)

    def forward(
        self,
        image: torch.Tensor,
        features: Sequence[torch.Tensor],
        embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``image [B, 3, H, W]``, the encoder's features and ``E [B, N_w, H, W]`` (none for
        the plain decoder) -> the raw output ``[B, out_channels, H, W]``."""
        sizes = [tuple(image.shape[-2:])] + [tuple(f.shape[-2:]) for f in features]
        pyramid = {} if embedding is None else embedding_pyramid(embedding, sizes)
        scale = pyramid.get  # None everywhere for the plain decoder

        skips = [
            skip(feature, scale(size))
            for skip, feature, size in zip(self.skips, features, sizes[1:], strict=True)
        ]
        hidden = skips[-1]
        for fusion, skip, size in zip(self.fusions, skips[-2::-1], sizes[-2:0:-1], strict=True):
            hidden = torch.cat([_upsample(hidden, size), skip], dim=1)
            hidden = fusion(hidden, scale(size))
        full = sizes[0]
        picture = image
        for layer in self.image_skip:
            picture = layer(picture, scale(full))
        hidden = self.final(torch.cat([_upsample(hidden, full), picture], dim=1), scale(full))
        return self.head(hidden)


def _upsample(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling to ``size`` (×2 between ResNet stages; align_corners as the
    authors' ``nn.Upsample``); a no-op between two stages of the same stride."""
    if tuple(features.shape[-2:]) == tuple(size):
        return features
    return F.interpolate(features, size=size, mode="bilinear", align_corners=True)
