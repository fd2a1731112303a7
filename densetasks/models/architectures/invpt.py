"""InvPT (Ye & Xu, "Inverted Pyramid Multi-task Transformer for Dense Scene Understanding",
ECCV 2022), as the authors' code (``prismformore/Multi-Task-Transformer``, folder ``InvPT``,
``models/transformers/{transformer_decoder,invpt}.py``) builds it, on a plain ViT.

It reads the ViT's patch tokens at four blocks (:meth:`Encoder.forward_tokens`; for a ViT-L
blocks 6, 12, 18 and 24, the authors' ``select_list`` and densetasks' default) at stride 16:

1. **Preliminary decoder** (Sec. 3.2): the last block's tokens, layer-normed (the ViT's final
   norm, which the authors' wrapper applies and timm's feature extractor prunes: here it is
   InvPT's own and starts at identity), resized bilinearly to half their grid (stride 32); per
   task two 3×3 conv-BN-ReLU (to ``embed_channels``) and a 1×1 preliminary prediction, the
   auxiliary output ``"<task>@preliminary"``, supervised like the final one (the authors' loss
   adds it with the task's weight). Feature and prediction concatenated, a 1×1 conv to the
   decoder's width ``D = embed_channels + prediction_channels``.
2. **Inverted pyramid** (Sec. 3.3-3.4): three UP-Transformer stages at strides 32, 16, 8 and
   widths D, D/2, D/4. Stages 2 and 3 first upsample each task's map 2× (bilinear, then two
   dilated 3×3 conv-BN-ReLU) and add the encoder's tokens of block 12 (3×3 conv, stage 2) or
   of block 6 (3×3 transposed conv to stride 8, stage 3): the encoder feature aggregation.
   Each stage is one transformer block over the tokens of *all* tasks together (the global
   cross-task attention): queries from a per-task depthwise 3×3 conv + BN at stride 2, keys
   and values average-pooled to the same grid at every stage (pooling 2, 4, 8), and the
   attention scores of the stage before upsampled 2× and fused with this stage's by a 1×1
   conv over the heads (cross-scale self-attention message passing); the output upsampled
   back to the stage's grid, a residual, an MLP.
3. **Multi-scale aggregation** (Sec. 3.5): each stage's output layer-normed over all tasks'
   channels together, per task the last two reduced to D by a 1×1 conv, all three resized to
   twice the last stage's grid (stride 4) and summed; per task a 3×3 conv-BN-ReLU and a 1×1
   prediction, bilinear to the image.

Grids that the authors' code requires to be even (the image a multiple of 64 at patch 16)
are rounded up here (the first stage's grid is half the token grid rounded up, each
upsampling goes to the size of the encoder feature added to it, the previous scores to this
stage's query grid): equal to the authors' code on their sizes, defined on any other. Modules
the authors build but never call (``scale_embed[2]`` on block 18, ``redu_chan[0]``,
``norm_mt``, stage 1's ``fuse_attn``) are left out; ``tools/compare_invpt.py`` maps every
other weight one to one.
"""

import torch
from torch import nn
from torch.nn import functional as F

from densetasks.errors import ConfigError
from densetasks.models.base import Architecture, AuxiliaryOutput, Encoder
from densetasks.models.bottlenecks import conv_bn_relu
from densetasks.models.columns import check_task_channels
from densetasks.models.heads import upsample

KEY_POOLING = (2, 4, 8)
"""Average pooling of the keys and values per stage (the authors' ``KERNEL_KV`` and
``STRIDE_KV``): every stage's keys lie on the first stage's grid halved."""

QUERY_STRIDE = 2
"""Stride of the depthwise convolution that makes the queries (``STRIDE_Q``)."""

Message = tuple[torch.Tensor, tuple[int, int]]
"""The attention scores ``[B, heads, T·h·w, keys]`` of a stage and its query grid ``(h, w)``."""


def _channels_last(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``module`` (a LayerNorm) on the channels of an NCHW map."""
    return module(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _trunc_normal_linears(module: nn.Module) -> None:
    """The authors' initialisation of their stages' linear layers: weights from a normal with
    std 0.02 truncated to ±2, zero biases."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)


class PreliminaryDecoder(nn.Module):
    """One task's two 3×3 conv-BN-ReLU and 1×1 preliminary prediction."""

    def __init__(self, in_channels: int, channels: int, out_channels: int) -> None:
        super().__init__()
        self.refine = nn.Sequential(
            conv_bn_relu(in_channels, in_channels, 3), conv_bn_relu(in_channels, channels, 3)
        )
        self.predict = nn.Conv2d(channels, out_channels, 1)


class UpEmbedding(nn.Module):
    """Bilinear upsampling to ``size``, then two dilated 3×3 conv-BN-ReLU (the authors'
    ``UpEmbed``: kernel 3, dilation 2, padding 2, no biases)."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            conv_bn_relu(in_channels, channels, 3, dilation=2),
            conv_bn_relu(channels, channels, 3, dilation=2),
        )

    def forward(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return self.convs(upsample(x, size))


class CrossTaskAttention(nn.Module):
    """Multi-head attention over every task's tokens together at one stage.

    Queries: per task a depthwise 3×3 conv (stride 2, no bias) + BN, then a linear layer
    shared by the tasks; keys and values: per task average pooling (``pooling``, ceil mode),
    then shared linear layers. Scores scaled by ``channels ** -0.5`` (the whole width, as the
    authors' code does, not a head's). With ``fuse``, the previous stage's scores (per task
    resized to this stage's query grid) join this stage's along the heads and a 1×1 conv
    maps the ``2 × heads`` maps back to ``heads`` before the softmax.
    """

    def __init__(
        self, tasks: list[str], channels: int, heads: int, pooling: int, fuse: bool
    ) -> None:
        super().__init__()
        self.heads = heads
        self.scale = channels**-0.5
        self.queries = nn.ModuleDict(
            {
                task: nn.Sequential(
                    nn.Conv2d(
                        channels,
                        channels,
                        3,
                        stride=QUERY_STRIDE,
                        padding=1,
                        groups=channels,
                        bias=False,
                    ),
                    nn.BatchNorm2d(channels),
                )
                for task in tasks
            }
        )
        self.pool = nn.AvgPool2d(pooling, pooling, ceil_mode=True)
        self.q = nn.Linear(channels, channels)
        self.k = nn.Linear(channels, channels)
        self.v = nn.Linear(channels, channels)
        self.fuse = nn.Conv2d(2 * heads, heads, 1) if fuse else None
        self.proj = nn.Linear(channels, channels)

    def _split_heads(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, channels = tokens.shape
        return tokens.reshape(batch, length, self.heads, channels // self.heads).transpose(1, 2)

    def _previous(self, message: Message, grid: tuple[int, int]) -> torch.Tensor:
        """The previous stage's scores with each task's rows resized to ``grid``."""
        scores, (height, width) = message
        batch, heads, _, keys = scores.shape
        resized = []
        for rows in scores.split(height * width, dim=2):
            maps = rows.reshape(batch * heads, height, width, keys).permute(0, 3, 1, 2)
            maps = upsample(maps, grid).permute(0, 2, 3, 1)
            resized.append(maps.reshape(batch, heads, grid[0] * grid[1], keys))
        return torch.cat(resized, dim=2)

    def forward(
        self, maps: dict[str, torch.Tensor], message: Message | None
    ) -> tuple[dict[str, torch.Tensor], Message]:
        """Each task's attention output at its map's size, and this stage's message."""
        queries = [self.queries[task](x) for task, x in maps.items()]
        grid = tuple(queries[0].shape[-2:])
        pooled = [self.pool(x) for x in maps.values()]

        def tokens(parts: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat([part.flatten(2) for part in parts], dim=2).transpose(1, 2)

        q = self._split_heads(self.q(tokens(queries)))
        k = self._split_heads(self.k(tokens(pooled)))
        v = self._split_heads(self.v(tokens(pooled)))
        scores = q @ k.transpose(-1, -2) * self.scale
        if self.fuse is not None:
            scores = self.fuse(torch.cat([scores, self._previous(message, grid)], dim=1))
        out = (F.softmax(scores, dim=-1) @ v).transpose(1, 2)
        out = self.proj(out.flatten(2))
        batch, _, channels = out.shape
        outputs = {}
        for (task, x), rows in zip(maps.items(), out.split(grid[0] * grid[1], dim=1), strict=True):
            query_map = rows.transpose(1, 2).reshape(batch, channels, *grid)
            outputs[task] = upsample(query_map, x.shape[-2:])
        return outputs, (scores, grid)


class UpTransformerStage(nn.Module):
    """One stage of the inverted pyramid: (below the first) each task's map upsampled to the
    encoder feature's size and that feature added, then one transformer block (pre-norm
    attention and MLP, both residual) over all tasks' tokens."""

    def __init__(
        self,
        tasks: list[str],
        in_channels: int,
        channels: int,
        heads: int,
        mlp_ratio: float,
        pooling: int,
        first: bool,
    ) -> None:
        super().__init__()
        self.up = (
            None
            if first
            else nn.ModuleDict({task: UpEmbedding(in_channels, channels) for task in tasks})
        )
        self.norm1 = nn.LayerNorm(channels)
        self.attention = CrossTaskAttention(tasks, channels, heads, pooling, fuse=not first)
        self.norm2 = nn.LayerNorm(channels)
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels)
        )
        _trunc_normal_linears(self)

    def forward(
        self,
        maps: dict[str, torch.Tensor],
        message: Message | None,
        skip: torch.Tensor | None,
    ) -> tuple[dict[str, torch.Tensor], Message]:
        if self.up is not None:
            maps = {task: self.up[task](x, skip.shape[-2:]) + skip for task, x in maps.items()}
        normed = {task: _channels_last(x, self.norm1) for task, x in maps.items()}
        attended, message = self.attention(normed, message)
        outputs = {}
        for task, x in maps.items():
            x = (x + attended[task]).permute(0, 2, 3, 1)
            x = x + self.mlp(self.norm2(x))
            outputs[task] = x.permute(0, 3, 1, 2)
        return outputs, message


class InvPT(Architecture):
    """InvPT on a plain ViT (see the module); one task or more.

    ``embed_channels`` (512) and ``prediction_channels`` (64: the authors'
    ``PRED_OUT_NUM_CONSTANT``) make the decoder's width ``D``; ``heads`` (2) and
    ``mlp_ratio`` (4) are every stage's (``configs/nyud/nyud_vitLp16.yml`` and
    ``transformer_decoder.py``). In training it also returns ``"<task>@preliminary"`` at
    stride 32, supervised with weight ``aux_weight`` (1).
    """

    def __init__(
        self,
        task_channels: dict[str, int],
        encoder: Encoder,
        embed_channels: int = 512,
        prediction_channels: int = 64,
        heads: int = 2,
        mlp_ratio: float = 4.0,
        aux_weight: float = 1.0,
    ) -> None:
        check_task_channels(task_channels)
        if encoder.token_channels is None:
            raise ConfigError(
                f"InvPT decodes a plain ViT's tokens (Encoder.forward_tokens); encoder "
                f"{type(encoder).__name__} has none: choose a plain ViT such as "
                "vit_large_patch16_384, vit_base_patch16_384 or test_vit"
            )
        width = embed_channels + prediction_channels
        widths = [width // 2**stage for stage in range(len(KEY_POOLING))]
        if min(embed_channels, prediction_channels, heads) < 1 or widths[-1] % heads:
            raise ConfigError(
                "model.options: InvPT needs embed_channels, prediction_channels and heads >= 1 "
                "with embed_channels + prediction_channels divisible by 4 × heads (stage widths "
                f"D, D/2, D/4 split into heads); got {embed_channels} + {prediction_channels}, "
                f"heads {heads}"
            )
        if mlp_ratio <= 0 or aux_weight < 0:
            raise ConfigError(
                "model.options: InvPT needs mlp_ratio > 0 and aux_weight >= 0; got "
                f"{mlp_ratio}, {aux_weight}"
            )
        super().__init__(task_channels)
        tasks = list(task_channels)
        tokens = encoder.token_channels
        self.encoder = encoder
        self.encoder_norm = nn.LayerNorm(tokens, eps=1e-6)
        self.preliminary = nn.ModuleDict(
            {
                task: PreliminaryDecoder(tokens, embed_channels, out)
                for task, out in task_channels.items()
            }
        )
        self.mix = nn.ModuleDict(
            {task: nn.Conv2d(embed_channels + out, width, 1) for task, out in task_channels.items()}
        )
        self.encoder_skips = nn.ModuleList(
            [
                nn.Conv2d(tokens, widths[1], 3, padding=1),
                nn.ConvTranspose2d(tokens, widths[2], 3, stride=2, padding=1, output_padding=1),
            ]
        )
        self.stages = nn.ModuleList(
            [
                UpTransformerStage(
                    tasks,
                    widths[max(stage - 1, 0)],
                    widths[stage],
                    heads,
                    mlp_ratio,
                    pooling,
                    first=stage == 0,
                )
                for stage, pooling in enumerate(KEY_POOLING)
            ]
        )
        self.stage_norms = nn.ModuleList([nn.LayerNorm(len(tasks) * w) for w in widths])
        self.reduce = nn.ModuleList(
            [nn.ModuleDict({task: nn.Conv2d(w, width, 1) for task in tasks}) for w in widths[1:]]
        )
        self.fuse = nn.ModuleDict(
            {
                task: nn.Sequential(
                    nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
                )
                for task in tasks
            }
        )
        for fuse in self.fuse.values():
            nn.init.trunc_normal_(fuse[0].weight, std=0.02)
        self.heads = nn.ModuleDict(
            {task: nn.Conv2d(width, out, 1) for task, out in task_channels.items()}
        )
        self.auxiliary_outputs = tuple(
            AuxiliaryOutput(task, "preliminary", aux_weight) for task in tasks
        )

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.encoder.forward_tokens(image)
        deepest = _channels_last(tokens[-1], self.encoder_norm)
        start = [(side + 1) // 2 for side in deepest.shape[-2:]]
        x = upsample(deepest, start)
        outputs = {}
        maps = {}
        for task, preliminary in self.preliminary.items():
            feature = preliminary.refine(x)
            prediction = preliminary.predict(feature)
            if self.training:
                outputs[f"{task}@preliminary"] = prediction
            maps[task] = self.mix[task](torch.cat([feature, prediction], dim=1))
        skips = [None, *(skip(tokens[1 - index]) for index, skip in enumerate(self.encoder_skips))]
        message = None
        scales = []
        for stage, norm, skip in zip(self.stages, self.stage_norms, skips, strict=True):
            maps, message = stage(maps, message, skip)
            normed = _channels_last(torch.cat(list(maps.values()), dim=1), norm)
            scales.append(dict(zip(maps, normed.chunk(len(maps), dim=1), strict=True)))
        size = [2 * side for side in scales[-1][next(iter(maps))].shape[-2:]]
        for task, head in self.heads.items():
            x = upsample(scales[0][task], size)
            for reduce, scale in zip(self.reduce, scales[1:], strict=True):
                x = x + upsample(reduce[task](scale[task]), size)
            outputs[task] = upsample(head(self.fuse[task](x)), image.shape[-2:])
        return outputs

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def shared_parameters(self) -> list[nn.Parameter]:
        """The encoder and its norm, every task's 1×1 mix into the decoder, the encoder skips
        and the three stages with their norms: every task attends to every task's tokens and
        the stage norms span all tasks' channels, so each task's loss reaches all of them.
        The preliminary decoders are their task's own branch (only it supervises them, the
        others read them: PAD-Net's rule), the reductions, final convs and heads per task."""
        shared = [*self.encoder.parameters(), *self.encoder_norm.parameters()]
        shared += list(self.mix.parameters())
        skips = [None, *self.encoder_skips]
        for stage, norm, skip in zip(self.stages, self.stage_norms, skips, strict=True):
            if skip is not None:
                shared += list(skip.parameters())
            shared += [*stage.parameters(), *norm.parameters()]
        return shared
