"""Saliency: one logit per pixel, batch-balanced BCE (Popovic et al., CVPR 2021), maxF and
maxIoU."""

import torch

from densetasks.metrics.saliency import SaliencyMetrics
from densetasks.tasks.edges import BinaryMapTask


class Saliency(BinaryMapTask):
    """Salient-object maps (Popovic et al., CVPR 2021, Sec. 4) with a batch-balanced cross-entropy.

    Popovic et al. (CVPR 2021, supplementary) weigh each class by its inverse frequency in the
    batch, normalised to sum to 1: ``w₊ = (1/n₊) / (1/n₊ + 1/n₋) = n₋ / n``, the fraction of
    negatives, and ``w₋ = n₊ / n``, the fraction of positives, counted over the batch's valid,
    palette-selected pixels (the authors' code does the same). Metrics: :class:`SaliencyMetrics`
    (maxF with β² = 0.3 and maxIoU over 15 thresholds).
    """

    name = "saliency"
    primary_metric = "maxF"

    def class_weights(
        self, target: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(fraction of negatives, fraction of positives)`` among the valid pixels."""
        count = valid.sum().clamp(min=1)
        positive_fraction = target.sum() / count
        return 1.0 - positive_fraction, positive_fraction

    def metrics(self) -> SaliencyMetrics:
        return SaliencyMetrics()
