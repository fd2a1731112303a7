"""Saliency: one logit per pixel, batch-balanced BCE (Popovic et al., CVPR 2021), maxF and
maxIoU under a named evaluation protocol."""

import torch

from densetasks.errors import ConfigError
from densetasks.metrics.saliency import SALIENCY_PROTOCOLS, SaliencyMetrics, SaliencyProtocol
from densetasks.tasks.edges import BinaryMapTask


class Saliency(BinaryMapTask):
    """Salient-object maps (Popovic et al., CVPR 2021, Sec. 4) with a batch-balanced cross-entropy.

    Popovic et al. (CVPR 2021, supplementary) weigh each class by its inverse frequency in the
    batch, normalised to sum to 1: ``w₊ = (1/n₊) / (1/n₊ + 1/n₋) = n₋ / n``, the fraction of
    negatives, and ``w₋ = n₊ / n``, the fraction of positives, counted over the batch's valid,
    palette-selected pixels (the authors' code does the same). Metrics: :class:`SaliencyMetrics`
    under ``protocol``: ``per_image_f1`` (default; the ASTMT evaluation Popovic et al. follow)
    or ``pooled_beta2_0.3``. The primary metric is ``maxIoU``: the "Sal" column of Popovic et
    al. (CVPR 2021, Tables 1 and 2, "maximal mIoU over different thresholds", Sec. 5).
    """

    name = "saliency"
    primary_metric = "maxIoU"

    def __init__(self, *, protocol: SaliencyProtocol = "per_image_f1") -> None:
        if protocol not in SALIENCY_PROTOCOLS:
            raise ConfigError(
                f"saliency.protocol must be one of {', '.join(SALIENCY_PROTOCOLS)}, "
                f"got {protocol!r}"
            )
        self.protocol = protocol

    def class_weights(
        self, target: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(fraction of negatives, fraction of positives)`` among the valid pixels."""
        count = valid.sum().clamp(min=1)
        positive_fraction = target.sum() / count
        return 1.0 - positive_fraction, positive_fraction

    def metrics(self) -> SaliencyMetrics:
        """maxF and maxIoU over 15 thresholds in [0.2, 0.9] under the task's protocol."""
        return SaliencyMetrics(self.protocol)
