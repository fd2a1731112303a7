"""Cross-stitch networks (Misra, Shrivastava, Gupta & Hebert, CVPR 2016) for dense tasks, as
the survey of Vandenhende et al. (TPAMI 2021) builds them on a ResNet: one network per task,
a cross-stitch unit after each of layer1 … layer4.

A unit mixes the tasks' features linearly (Misra et al., eq. 1):
``x̃_i = Σ_j α_ij ⊙ x_j``, with one α per channel and ordered task pair as in the survey's
code, initialised to ``α_S`` on the diagonal and ``α_D`` elsewhere: (0.9, 0.1), the best
initialisation of Misra et al.'s ablation and the survey's NYUD value.
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from densetasks.models.base import Encoder
from densetasks.models.columns import ColumnNetwork


class CrossStitchUnit(nn.Module):
    """``x̃_i = Σ_j α_i[j] ⊙ x_j`` over the tasks; ``α_i`` (``alpha[task i]``) of shape
    ``[T, C]`` is what task ``i`` reads, so the last unit's are each task's own."""

    def __init__(self, tasks: list[str], channels: int, alpha: float, beta: float) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.alpha = nn.ParameterDict(
            {
                target: nn.Parameter(
                    torch.tensor([alpha if source == target else beta for source in self.tasks])
                    .unsqueeze(-1)
                    .repeat(1, channels)
                )
                for target in self.tasks
            }
        )

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sources = [features[task] for task in self.tasks]
        return {
            target: sum(
                weight.view(1, -1, 1, 1) * x
                for weight, x in zip(self.alpha[target], sources, strict=True)
            )
            for target in self.tasks
        }


class CrossStitch(ColumnNetwork):
    """One encoder, bottleneck and head per task, a :class:`CrossStitchUnit` after each of
    ``units`` (default: every stage but the first, i.e. after layer1 … layer4 of a ResNet,
    whose stage 0 is the stem; the survey's layout).

    ``alpha`` / ``beta``: the initial same-task / other-task weights (α_S, α_D).
    ``bottleneck``, ``head`` and their options build each task's head as on hard sharing; by
    default ASPP with its projection and the 3×3 DeepLab head, the survey's ``DeepLabHead``
    (``bottleneck_options: {dropout: 0.5}`` adds its code's dropout).
    """

    def __init__(
        self,
        task_channels: dict[str, int],
        encoder: Encoder,
        units: Sequence[int] | None = None,
        alpha: float = 0.9,
        beta: float = 0.1,
        bottleneck: str = "aspp",
        head: str = "deeplab",
        bottleneck_options: dict[str, Any] | None = None,
        head_options: dict[str, Any] | None = None,
    ) -> None:
        stages = range(1, len(encoder.feature_info)) if units is None else units
        super().__init__(
            task_channels,
            encoder,
            stages,
            "units",
            partial(CrossStitchUnit, alpha=alpha, beta=beta),
            bottleneck,
            head,
            bottleneck_options,
            head_options,
        )
