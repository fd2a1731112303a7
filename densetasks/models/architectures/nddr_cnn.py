"""NDDR-CNN (Gao, Ma, Zhao, Liu & Yuille, CVPR 2019): one network per task, and after every
stage a *neural discriminative dimensionality reduction* layer per task that reads every
task's feature (concatenated) and reduces them back to one task's width.

An NDDR layer is a 1×1 convolution without bias, batch norm and ReLU, as the survey of
Vandenhende et al. (TPAMI 2021) builds it (batch-norm momentum 0.05, "as the NDDR-CNN repo";
PyTorch's default is 0.1). Its weight starts identity-like (Gao et al.), as
``[βI … αI … βI]``: ``α`` on the block that reads the task's own feature, ``β`` on the
others, (α, β) = (0.9, 0.1) as in the survey's NYUD config; the batch norm starts as the
identity (scale 1, shift 0).
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from densetasks.models.base import Encoder
from densetasks.models.columns import ColumnNetwork

NDDR_MOMENTUM = 0.05
"""Batch-norm momentum of the NDDR layers (the authors' TensorFlow code, as the survey says)."""


class NDDRLayer(nn.Module):
    """Per task: ``ReLU(BN(W_t · concat_j x_j))`` with ``W_t`` 1×1, from ``T·C`` to ``C``."""

    def __init__(
        self, tasks: list[str], channels: int, alpha: float, beta: float, momentum: float
    ) -> None:
        super().__init__()
        self.tasks = list(tasks)
        count = len(self.tasks)
        self.layers = nn.ModuleDict()
        identity = torch.eye(channels)
        for index, task in enumerate(self.tasks):
            conv = nn.Conv2d(count * channels, channels, 1, bias=False)
            blocks = [alpha * identity if j == index else beta * identity for j in range(count)]
            with torch.no_grad():
                conv.weight.copy_(torch.cat(blocks, dim=1)[..., None, None])
            self.layers[task] = nn.Sequential(
                conv, nn.BatchNorm2d(channels, momentum=momentum), nn.ReLU(inplace=True)
            )

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        stacked = torch.cat([features[task] for task in self.tasks], dim=1)
        return {task: layer(stacked) for task, layer in self.layers.items()}


class NDDR(ColumnNetwork):
    """One encoder, bottleneck and head per task, an :class:`NDDRLayer` after each of
    ``layers`` (default: every stage; on a ResNet the first sits after the stem, before its
    max-pool, where the survey puts it after the max-pool: docs/models.md).

    ``alpha`` / ``beta``: the initial weights of the own / the other tasks' blocks;
    ``momentum``: the NDDR batch norms' momentum. ``bottleneck``, ``head`` and their options
    build each task's head as for :class:`~densetasks.models.architectures.cross_stitch.
    CrossStitch`.
    """

    def __init__(
        self,
        task_channels: dict[str, int],
        encoder: Encoder,
        layers: Sequence[int] | None = None,
        alpha: float = 0.9,
        beta: float = 0.1,
        momentum: float = NDDR_MOMENTUM,
        bottleneck: str = "aspp",
        head: str = "deeplab",
        bottleneck_options: dict[str, Any] | None = None,
        head_options: dict[str, Any] | None = None,
    ) -> None:
        stages = range(len(encoder.feature_info)) if layers is None else layers
        super().__init__(
            task_channels,
            encoder,
            stages,
            "layers",
            partial(NDDRLayer, alpha=alpha, beta=beta, momentum=momentum),
            bottleneck,
            head,
            bottleneck_options,
            head_options,
        )
