"""MTAN, the multi-task attention network (Liu, Johns & Davison, CVPR 2019), on an encoder
with stages, as the authors' ResNet code (``lorenmt/mtan``, ``resnet_mtan.py``) and the survey
of Vandenhende et al. (TPAMI 2021) build it.

One shared encoder; per task, a soft-attention module at every attended stage ``k``
(Liu et al., Sec. 3.2, eq. 1): a mask computed from the stage's feature before its last block
``u_b`` (concatenated with the task's attended feature of the previous attended stage),
multiplied element-wise with the stage's output ``u_t``::

    a_k = g_k([u_b^k, f(a_{k-1})]) ⊙ u_t^k          g = 1×1 conv, BN, ReLU, 1×1 conv, BN, sigmoid

``f`` is a shared refinement (one ResNet bottleneck block to the next attended stage's width)
followed by a max-pool when the next stage halves the resolution. The attended feature of
the last stage goes to the task's head (ASPP + DeepLab head by default, the survey's).
"""

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck as ResidualBottleneck

from densetasks.errors import ConfigError
from densetasks.models.base import Architecture, Encoder
from densetasks.models.columns import check_stages, check_task_channels, task_heads


class AttentionMask(nn.Sequential):
    """``g``: 1×1 conv to ``channels // 4``, BN, ReLU, 1×1 conv to ``channels``, BN, sigmoid
    (the authors' ``att_layer``; the convolutions have biases)."""

    def __init__(self, in_channels: int, channels: int) -> None:
        middle = max(1, channels // 4)
        super().__init__(
            nn.Conv2d(in_channels, middle, 1),
            nn.BatchNorm2d(middle),
            nn.ReLU(inplace=True),
            nn.Conv2d(middle, channels, 1),
            nn.BatchNorm2d(channels),
            nn.Sigmoid(),
        )


def refinement(in_channels: int, out_channels: int, pool: int) -> nn.Sequential:
    """``f``: one ResNet bottleneck block from ``in_channels`` to ``out_channels`` (1×1 conv
    + BN on the shortcut), then a ``pool``×``pool`` max-pool when ``pool`` > 1 (rounding up,
    so that it meets the encoder's stride-2 convolutions on odd sizes)."""
    if out_channels % ResidualBottleneck.expansion:
        raise ConfigError(
            f"MTAN's refinement block needs a width divisible by {ResidualBottleneck.expansion}; "
            f"the encoder stage has {out_channels} channels"
        )
    shortcut = nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
    )
    block = ResidualBottleneck(
        in_channels, out_channels // ResidualBottleneck.expansion, downsample=shortcut
    )
    if pool == 1:
        return nn.Sequential(block)
    return nn.Sequential(block, nn.MaxPool2d(pool, pool, ceil_mode=True))


def _check_splits(encoder: Encoder, stages: tuple[int, ...]) -> None:
    """Every attended stage splits before its last block into a feature of its output's
    shape (a stage of one block that changes the shape cannot be attended this way)."""
    side = 2 * encoder.feature_info[-1].stride
    x = torch.zeros(1, 3, side, side)
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            for stage in range(stages[-1] + 1):
                before, x = encoder.forward_stage_blocks(x, stage)
                if stage in stages and before.shape != x.shape:
                    raise ConfigError(
                        f"model.options.stages: MTAN attends stage {stage} over its last block, "
                        f"but in encoder {type(encoder).__name__} that block changes the shape "
                        f"({tuple(before.shape[1:])} -> {tuple(x.shape[1:])}): attend other stages"
                    )
    finally:
        encoder.train(was_training)


class MTAN(Architecture):
    """Shared encoder, per-task attention at every stage of ``stages`` (default every stage
    but the first: layer1 … layer4 of a ResNet, whose stage 0 is the stem; the authors' and
    the survey's layout), a shared refinement between consecutive attended stages, and one
    bottleneck + head per task on its attended deepest feature. The last attended stage must
    be the encoder's last. Shallower features, read by multi-scale heads, are the shared ones.
    """

    def __init__(
        self,
        task_channels: dict[str, int],
        encoder: Encoder,
        stages: Sequence[int] | None = None,
        bottleneck: str = "aspp",
        head: str = "deeplab",
        bottleneck_options: dict[str, Any] | None = None,
        head_options: dict[str, Any] | None = None,
    ) -> None:
        check_task_channels(task_channels)
        super().__init__(task_channels)
        info = encoder.feature_info
        attended = check_stages(
            "stages", range(1, len(info)) if stages is None else stages, len(info)
        )
        if attended[-1] != len(info) - 1:
            raise ConfigError(
                f"model.options.stages: {list(attended)} must end with the encoder's last stage "
                f"({len(info) - 1}), whose attended feature the heads read"
            )
        _check_splits(encoder, attended)
        self.stages = attended
        self.encoder = encoder
        self.attention = nn.ModuleDict(
            {
                str(stage): nn.ModuleDict(
                    {
                        task: AttentionMask(
                            info[stage].channels * (1 if index == 0 else 2), info[stage].channels
                        )
                        for task in task_channels
                    }
                )
                for index, stage in enumerate(attended)
            }
        )
        self.refine = nn.ModuleDict(
            {
                str(stage): refinement(
                    info[stage].channels,
                    info[following].channels,
                    info[following].stride // info[stage].stride,
                )
                for stage, following in pairwise(attended)
            }
        )
        self.heads = task_heads(
            task_channels, info, bottleneck, head, bottleneck_options, head_options
        )

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        shared, before = [], {}
        x = image
        for stage in range(len(self.encoder.feature_info)):
            if stage in self.stages:
                before[stage], x = self.encoder.forward_stage_blocks(x, stage)
            else:
                x = self.encoder.forward_stages(x, stage, stage + 1)[0]
            shared.append(x)
        attended: dict[str, torch.Tensor] = {}
        for stage in self.stages:
            masks = self.attention[str(stage)]
            for task, mask in masks.items():
                inputs = before[stage]
                if task in attended:
                    inputs = torch.cat([inputs, attended[task]], dim=1)
                attended[task] = mask(inputs) * shared[stage]
                if str(stage) in self.refine:
                    attended[task] = self.refine[str(stage)](attended[task])
        size = image.shape[-2:]
        return {
            task: head([*shared[:-1], attended[task]], size) for task, head in self.heads.items()
        }

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def shared_parameters(self) -> list[nn.Parameter]:
        """The encoder and the refinements between attended stages: every task's attention
        reads them; the attention masks and heads are each task's own."""
        return [*self.encoder.parameters(), *self.refine.parameters()]
