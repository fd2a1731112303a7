"""Saliency metrics over a set: maximum F-measure (β² = 0.3) and maximum IoU over thresholds.

The protocol of the evaluation code of Popovic et al. (CVPR 2021) (and of the PASCAL-MT saliency
benchmark it follows): the probability map is binarised at 15 thresholds evenly spaced in [0.2, 0.9]
(``p ≥ t`` is salient); true / false positives and false negatives are summed per threshold over the
whole set, and the best threshold's F-measure and IoU are reported. β² = 0.3 is the
salient-object-detection convention (Achanta et al. 2009), weighing precision above recall.
"""

from typing import ClassVar

import numpy as np
import torch

from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import ConfigError
from densetasks.metrics.base import Metric
from densetasks.metrics.boundary import f_measure

SALIENCY_BETA_SQUARED = 0.3
"""β² of the saliency F-measure (precision weighted above recall)."""


class SaliencyMetrics(Metric):
    """``maxF`` and ``maxIoU`` in percent from per-threshold sums.

    States: ``tp``, ``fp``, ``fn`` int64 ``[K]``, over every labelled pixel (label 0 / 1;
    ``IGNORE_INDEX`` left out). ``maxF`` and ``maxIoU`` are maximised independently, each
    over the same thresholds.
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"maxF": True, "maxIoU": True}

    def __init__(
        self,
        thresholds: int = 15,
        low: float = 0.2,
        high: float = 0.9,
        beta_squared: float = SALIENCY_BETA_SQUARED,
    ) -> None:
        super().__init__()
        if thresholds < 1 or not 0.0 <= low <= high <= 1.0:
            raise ConfigError(
                f"saliency thresholds need count >= 1 and 0 <= low <= high <= 1, "
                f"got {thresholds} in [{low}, {high}]"
            )
        self.thresholds = torch.linspace(low, high, thresholds, dtype=torch.float64)
        self.beta_squared = beta_squared
        for name in ("tp", "fp", "fn"):
            self.add_state(name, torch.zeros(thresholds, dtype=torch.int64))

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add probabilities ``pred`` (float ``[B, H, W]``) and labels ``target`` (0/1/255)."""
        if pred.shape != target.shape:
            raise ValueError(
                f"saliency prediction {tuple(pred.shape)} != label {tuple(target.shape)}"
            )
        valid = target != IGNORE_INDEX
        prob = pred.detach()[valid].cpu().double()
        salient = (target[valid] == 1).cpu()
        bins = len(self.thresholds) + 1
        level = torch.searchsorted(self.thresholds, prob, right=True)  # thresholds ≤ p
        histogram = torch.bincount(level * 2 + salient.long(), minlength=2 * bins).view(bins, 2)
        above = histogram.flip(0).cumsum(0).flip(0)[1:]  # [K, 2]: counts with p ≥ t
        total = histogram.sum(0)
        self.set_state("tp", self.tp + above[:, 1])
        self.set_state("fp", self.fp + above[:, 0])
        self.set_state("fn", self.fn + total[1] - above[:, 1])

    def compute(self) -> dict[str, float]:
        """``maxF`` and ``maxIoU`` in percent (0 before any salient pixel or prediction)."""
        tp, fp, fn = (state.double().numpy() for state in (self.tp, self.fp, self.fn))
        precision = tp / np.maximum(tp + fp, 1.0)
        recall = tp / np.maximum(tp + fn, 1.0)
        iou = tp / np.maximum(tp + fp + fn, 1.0)
        return {
            "maxF": 100.0 * float(f_measure(precision, recall, self.beta_squared).max()),
            "maxIoU": 100.0 * float(iou.max()),
        }
