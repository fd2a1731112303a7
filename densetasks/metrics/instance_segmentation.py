"""Instance evaluation of Kendall et al. (CVPR 2018): offset error and mask AP together.

The instance task's evaluation input is an :class:`InstancePrediction` (offsets plus the
semantic prediction), defined here as the input this metric reads and re-exported by
``densetasks.tasks.instance``. The offsets are scored directly (mean error in pixels, paper
000 Table 1); they are also grouped into instances with OPTICS on the centroid votes
(:mod:`densetasks.metrics.instance_grouping`) and the instance masks, each of the majority
predicted class under it, are scored with AP by the Cityscapes protocol
(:mod:`densetasks.metrics.instance_ap`). The ground truth is the instance ids, or an
:class:`InstanceMap` of the ids with the ground-truth semantic label (needed for per-class
AP, void and group regions). Nothing here imports ``densetasks.tasks`` (the tasks import the
metrics).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from densetasks.metrics.base import Metric
from densetasks.metrics.instance_ap import InstanceAPMetric, InstanceMap
from densetasks.metrics.instance_grouping import GroupingConfig, group_instances_batch
from densetasks.metrics.offsets import OffsetErrorMetric


@dataclass(frozen=True)
class InstancePrediction:
    """Offsets ``[B, 2, H, W]`` with the semantic prediction ``[B, H, W]`` they are grouped
    with (or one image of each, after indexing)."""

    offsets: torch.Tensor
    semantic: torch.Tensor

    def __getitem__(self, index: int) -> "InstancePrediction":
        return InstancePrediction(self.offsets[index], self.semantic[index])

    def cpu(self) -> "InstancePrediction":
        return InstancePrediction(self.offsets.cpu(), self.semantic.cpu())


class InstanceSegmentationMetrics(Metric):
    """``offset_error`` (px, lower is better) and ``ap``, ``ap50``, ``ap75``,
    ``ap_agnostic``, ``ap50_agnostic`` (%, higher; :class:`InstanceAPMetric`)."""

    higher_is_better: ClassVar[dict[str, bool]] = {
        **OffsetErrorMetric.higher_is_better,
        **InstanceAPMetric.higher_is_better,
    }
    units: ClassVar[dict[str, str]] = {**OffsetErrorMetric.units, **InstanceAPMetric.units}

    def __init__(self, instance_classes: Sequence[int], grouping: GroupingConfig) -> None:
        super().__init__()
        self.instance_classes = list(instance_classes)
        self.grouping = grouping
        self.offsets = OffsetErrorMetric()
        self.masks = InstanceAPMetric(self.instance_classes)

    def states(self) -> dict[str, torch.Tensor]:
        return {**self.offsets.states(), **self.masks.states()}

    def set_state(self, name: str, value: torch.Tensor) -> None:
        owner = self.offsets if name in self.offsets.states() else self.masks
        owner.set_state(name, value)

    def reset(self) -> None:
        self.offsets.reset()
        self.masks.reset()

    def update(
        self, pred: InstancePrediction | torch.Tensor, target: InstanceMap | torch.Tensor
    ) -> None:
        """Add one batch: offsets and semantic prediction in ``pred``; ids, or ids with the
        ground-truth semantic label, in ``target``.

        Offsets alone (a run without semantic predictions) update the offset error only;
        AP then stays NaN. Ids without a semantic label give ``ap_agnostic`` only."""
        ids = target.ids if isinstance(target, InstanceMap) else target
        if isinstance(pred, torch.Tensor):
            self.offsets.update(pred, ids)
            return
        self.offsets.update(pred.offsets, ids)
        semantic = pred.semantic.cpu()
        grouped = group_instances_batch(
            pred.offsets.detach().cpu(), semantic, self.instance_classes, self.grouping
        )
        self.masks.update(InstanceMap(grouped, semantic), target.cpu())

    def compute(self) -> dict[str, float]:
        return {**self.offsets.compute(), **self.masks.compute()}
