"""A plain ViT (one stride) as a four-level feature pyramid at strides 4, 8, 16 and 32.

**Which tokens.** Four blocks, evenly spaced by default — blocks 3, 6, 9, 12 of a ViT-B and
6, 12, 18, 24 of a ViT-L, the "hooks" of DPT (Ranftl et al., ICCV 2021, Sec. 3); InvPT (Ye &
Xu, ECCV 2022) reads the same four blocks of a ViT-L (6, 12, 18 and the normed 24), through
``forward_tokens``: the token maps at the patch stride, without the resampling below — chosen
with ``model.encoder_options.out_indices`` (0-based block indices, timm's argument).

**Readout.** Every level carries the prefix tokens (class, distillation, register tokens)
broadcast to every position and concatenated to the patch token's channels: the input of
DPT's "project" readout, which Ranftl et al. found best (Table 7). A level has
``(1 + prefix tokens) × width`` channels; the first decoder convolution projects it.

**Resampling.** The token grid (stride = patch size, 16) is resampled without parameters:
nearest-neighbour upsampling to strides 4 and 8 and 2×2 max pooling to 32, the pooling of
ViTDet's simple pyramid (Li et al., ECCV 2022, Sec. 3). DPT reassembles with learned
projections and transposed convolutions, ViTDet with learned deconvolutions; here those
learned projections are left to each decoder's first convolution, so that a level holds its
block's tokens *exactly* — an upsampled map subsampled is the token grid again — and the
next blocks can resume from it: stage ``k`` is blocks ``out_indices[k-1]+1 .. out_indices[k]``
(the patch and position embedding before stage 0), and ``forward_stages`` splits anywhere a
level is not pooled. Output stride 16 keeps the last level at 16, 8 upsamples the last two.

**Input size.** Any: position embeddings are interpolated to the input's token grid and the
input padded to a multiple of the patch size (timm's ``dynamic_img_size`` and
``dynamic_img_pad``). The patch size must be a power of two (16, 8, 32, ...), since the
pyramid's strides are.

Stages run through timm's ``VisionTransformer`` modules (patch embedding, ``_pos_embed``,
``norm_pre``, blocks); other one-stride timm families (BEiT, EVA, ...) run through their
``forward_intermediates`` and have the pyramid but no stage splits.
"""

import inspect
from collections.abc import Mapping
from typing import Any

import timm
import torch
from timm.models import VisionTransformer
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from densetasks.errors import ConfigError
from densetasks.models._encoder_tools import Pretrained, check_output_stride, stage_end
from densetasks.models.base import FeatureSpec
from densetasks.models.timm_network import (
    TimmNetworkEncoder,
    describe,
    hub_error,
    with_size_defaults,
)
from densetasks.models.timm_weights import load_timm_weights

PYRAMID_STRIDES = (4, 8, 16, 32)
"""Strides of the four levels at output stride 32 (at 16 and 8 the deeper ones stop there)."""


def default_blocks(depth: int) -> list[int]:
    """Four evenly spaced 0-based block indices ending at the last block (DPT's hooks)."""
    return [(level + 1) * depth // len(PYRAMID_STRIDES) - 1 for level in range(4)]


def _blocks(name: str, depth: int, chosen: Any) -> list[int]:
    """``out_indices`` resolved (negative counts from the end), or a :class:`ConfigError`."""
    if chosen is None:
        blocks = default_blocks(depth)
    else:
        blocks = [index % depth if -depth <= index < depth else index for index in chosen]
    if (
        len(blocks) != len(PYRAMID_STRIDES)
        or any(not 0 <= index < depth for index in blocks)
        or sorted(set(blocks)) != blocks
    ):
        given = blocks if chosen is None else chosen
        raise ConfigError(
            f"model.encoder_options.out_indices: encoder {name!r} needs 4 increasing block "
            f"indices in 0..{depth - 1} (one per pyramid level; the network has {depth} "
            f"blocks), got {given}"
        )
    return blocks


class ViTPyramidEncoder(TimmNetworkEncoder):
    """A one-stride timm network's tokens at four blocks as a pyramid (see the module)."""

    def __init__(
        self, name: str, pretrained: Pretrained = False, output_stride: int = 32, **options: Any
    ) -> None:
        super().__init__()
        check_output_stride(output_stride)
        self.name = name
        full = describe(name, options)
        self.blocks = _blocks(name, len(full.blocks), options.get("out_indices"))
        options = with_size_defaults(full, {**options, "out_indices": self.blocks})
        try:
            getter = timm.create_model(
                name, pretrained=pretrained is True, features_only=True, **options
            )
        except OSError as error:
            raise hub_error(name, full, error) from error
        self.model = getter.model  # the network, pruned after the last chosen block
        if pretrained is not False and pretrained is not True:
            load_timm_weights(self.model, full, name, options, pretrained)
        self.patch = _patch_size(name, self.model)
        self.input_multiple = self.patch  # timm pads the input (dynamic_img_pad)
        self.prefix_tokens = getattr(self.model, "num_prefix_tokens", 0)
        self.returns_prefix = "return_prefix_tokens" in _intermediates_options(self.model)
        self.width = full.feature_info[0]["num_chs"]
        self.token_channels = self.width
        channels = self.width * (1 + (self.prefix_tokens if self.returns_prefix else 0))
        self.feature_info = [
            FeatureSpec(channels, min(stride, output_stride)) for stride in PYRAMID_STRIDES
        ]
        self.runs_blocks = isinstance(self.model, VisionTransformer)
        self.grad_checkpointing = False
        self.read_training_practice(full)

    def forward_stages(
        self, inputs: torch.Tensor, start: int = 0, end: int | None = None
    ) -> list[torch.Tensor]:
        """Run stages ``start .. end - 1`` on ``inputs`` (see :class:`Encoder`)."""
        end = stage_end(start, end, len(self.feature_info))
        if not self.runs_blocks:
            return self._forward_intermediates(inputs, start, end)
        if start == 0:
            tokens, grid = self._embed(inputs)
        else:
            tokens, grid = self._tokens(inputs, start - 1)
        outputs = self._run_blocks(tokens, grid, start, end)
        return [
            self._level(spatial, prefix, level)
            for level, (spatial, prefix) in enumerate(outputs, start)
        ]

    def forward_tokens(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The patch tokens of the four chosen blocks (see :class:`Encoder`)."""
        if not self.runs_blocks:
            return [spatial for spatial, _ in self._intermediates(image)]
        tokens, grid = self._embed(image)
        return [spatial for spatial, _ in self._run_blocks(tokens, grid, 0, len(self.blocks))]

    def _run_blocks(
        self, tokens: torch.Tensor, grid: tuple[int, int], start: int, end: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """From the tokens before level ``start``'s blocks, each level ``start .. end - 1``'s
        patch tokens ``[B, D, h, w]`` and prefix tokens ``[B, P, D]``."""
        first = 0 if start == 0 else self.blocks[start - 1] + 1
        outputs = []
        for level in range(start, end):
            for block in self.model.blocks[first : self.blocks[level] + 1]:
                if self.grad_checkpointing and torch.is_grad_enabled():
                    tokens = checkpoint(block, tokens, use_reentrant=False)
                else:
                    tokens = block(tokens)
            first = self.blocks[level] + 1
            spatial = tokens[:, self.prefix_tokens :]
            spatial = spatial.reshape(tokens.shape[0], *grid, -1).permute(0, 3, 1, 2)
            outputs.append((spatial, tokens[:, : self.prefix_tokens]))
        return outputs

    def _embed(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch and position embedding, as timm's ``VisionTransformer.forward_features``."""
        model = self.model
        grid = tuple(model.patch_embed.dynamic_feat_size(image.shape[-2:]))
        tokens = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(image))))
        return tokens, grid

    def _level(self, spatial: torch.Tensor, prefix: torch.Tensor, level: int) -> torch.Tensor:
        """Tokens ``[B, D, h, w]`` (+ prefix ``[B, P, D]``) as pyramid level ``level``."""
        if prefix.shape[1]:
            batch, _, height, width = spatial.shape
            broadcast = prefix.reshape(batch, -1, 1, 1).expand(-1, -1, height, width)
            spatial = torch.cat([spatial, broadcast], dim=1)
        stride = self.feature_info[level].stride
        if stride < self.patch:
            return F.interpolate(spatial, scale_factor=self.patch // stride, mode="nearest")
        if stride > self.patch:
            factor = stride // self.patch
            return F.max_pool2d(spatial, factor, factor, ceil_mode=True)
        return spatial

    def _tokens(self, feature: torch.Tensor, level: int) -> tuple[torch.Tensor, tuple[int, int]]:
        """The token sequence that pyramid level ``level`` was made of (its inverse)."""
        stride = self.feature_info[level].stride
        if stride > self.patch:
            raise ConfigError(
                f"encoder {self.name!r}: stage {level + 1} cannot start from level {level}, "
                f"which is max-pooled to stride {stride} from the patch grid ({self.patch})"
            )
        step = self.patch // stride
        grid = feature[:, :, ::step, ::step]
        batch, _, height, width = grid.shape
        spatial = grid[:, : self.width].flatten(2).transpose(1, 2)
        prefix = grid[:, self.width :, 0, 0].reshape(batch, self.prefix_tokens, self.width)
        return torch.cat([prefix, spatial], dim=1), (height, width)

    def _forward_intermediates(
        self, image: torch.Tensor, start: int, end: int
    ) -> list[torch.Tensor]:
        """Every level through timm's ``forward_intermediates`` (families other than
        ``VisionTransformer``, whose blocks densetasks does not run one by one)."""
        if (start, end) != (0, len(self.feature_info)):
            raise ConfigError(
                f"encoder {self.name!r} cannot run stages {start}..{end - 1} on their own: "
                f"timm {type(self.model).__name__} runs its blocks inside "
                "forward_intermediates (stages split for VisionTransformer only); choose an "
                "architecture that does not branch inside the encoder"
            )
        return [
            self._level(spatial, prefix, level)
            for level, (spatial, prefix) in enumerate(self._intermediates(image))
        ]

    def _intermediates(self, image: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every level's patch and prefix tokens from timm's ``forward_intermediates``."""
        extra = {"return_prefix_tokens": True} if self.returns_prefix else {}
        levels = self.model.forward_intermediates(
            image, indices=self.blocks, output_fmt="NCHW", intermediates_only=True, **extra
        )
        return [
            output if isinstance(output, tuple) else (output, image[:, :0, 0]) for output in levels
        ]

    def set_input_size(self, size: tuple[int, int]) -> None:
        """Resample the position embeddings to the token grid of ``size`` once (timm's
        ``set_input_size``), as every forward at that size would: an exported graph then holds
        them as weights instead of the antialiased bicubic resize, which ONNX lacks."""
        if hasattr(self.model, "set_input_size"):
            padded = [-(-side // self.patch) * self.patch for side in size]
            self.model.set_input_size(img_size=tuple(padded))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every block's activations in the backward pass (timm's
        ``set_grad_checkpointing`` for the families run through ``forward_intermediates``)."""
        self.grad_checkpointing = enable
        self.model.set_grad_checkpointing(enable)


def _patch_size(name: str, model: nn.Module) -> int:
    size = model.patch_embed.patch_size
    height, width = (size, size) if isinstance(size, int) else size
    if height != width or height & (height - 1):
        raise ConfigError(
            f"encoder {name!r}: patch size {height}×{width} is not a square power of two, so "
            f"its token grid cannot be resampled to strides {PYRAMID_STRIDES} "
            "(e.g. DINOv2's 14; choose a patch-16 variant)"
        )
    return height


def _intermediates_options(model: nn.Module) -> Mapping[str, Any]:
    return inspect.signature(model.forward_intermediates).parameters
