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
    palette-selected pixels, on the one logit per pixel (for a CompositeTasking network the
    mean of its three channels, as for edges; Sec. 3.3 says "predict them at all 3 channels
    and calculate the mean at test-time", which the per-channel variant fits as well).

    ``bce_per_channel=True`` is the authors' code (``BalancedBCELoss`` of their release): a
    CompositeTasking output keeps its three channels (:meth:`from_composite`), each channel of
    each selected pixel is one element of the BCE, and the counts are of those elements with
    one added to each: ``w₊ = (n₋ + 1) / (n + 2)``, ``w₋ = (n₊ + 1) / (n + 2)``. Decoding then
    averages the channels' probabilities. Metrics: :class:`SaliencyMetrics` under
    ``protocol``: ``per_image_f1`` (default; the ASTMT evaluation Popovic et al. follow) or
    ``pooled_beta2_0.3``. The primary metric is ``maxIoU``: the "Sal" column of Popovic et
    al. (CVPR 2021, Tables 1 and 2, "maximal mIoU over different thresholds", Sec. 5).
    """

    name = "saliency"
    primary_metric = "maxIoU"

    def __init__(
        self, *, protocol: SaliencyProtocol = "per_image_f1", bce_per_channel: bool = False
    ) -> None:
        if protocol not in SALIENCY_PROTOCOLS:
            raise ConfigError(
                f"saliency.protocol must be one of {', '.join(SALIENCY_PROTOCOLS)}, "
                f"got {protocol!r}"
            )
        self.protocol = protocol
        self.bce_per_channel = bool(bce_per_channel)

    def class_weights(
        self, target: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(fraction of negatives, fraction of positives)`` among the valid elements; with
        ``bce_per_channel`` each count is one more, as in the authors' code."""
        smoothing = 1 if self.bce_per_channel else 0
        count = (valid.sum() + 2 * smoothing).clamp(min=1)
        positive_fraction = (target.sum() + smoothing) / count
        return 1.0 - positive_fraction, positive_fraction

    def loss(
        self, output: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The balanced BCE of :class:`BinaryMapTask`; with ``bce_per_channel`` on every
        channel of ``output`` ``[B, C, H, W]`` against the same label, weights counted over
        all ``C`` channels of the valid pixels, averaged over those elements."""
        if not self.bce_per_channel:
            return super().loss(output, label, mask)
        if output.ndim != 4 or output.shape[0] != label.shape[0]:
            raise ValueError(
                f"saliency output has shape {tuple(output.shape)}, expected [B, C, H, W] for a "
                f"label of shape {tuple(label.shape)}"
            )
        channels = output.shape[1]
        each_channel = output.reshape(-1, 1, *output.shape[-2:])
        repeated = None if mask is None else mask.repeat_interleave(channels, dim=0)
        return super().loss(each_channel, label.repeat_interleave(channels, dim=0), repeated)

    def from_composite(self, composite: torch.Tensor) -> torch.Tensor:
        """The channel mean as the logit (Sec. 3.3); with ``bce_per_channel`` the three
        channels, each a logit of its own (the authors' code)."""
        return composite if self.bce_per_channel else super().from_composite(composite)

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """Probability ``[B, H, W]``: the mean over ``output``'s channels of their sigmoids
        (one channel, or the three of ``bce_per_channel``)."""
        return torch.sigmoid(output).mean(dim=1)

    def metrics(self) -> SaliencyMetrics:
        """maxF and maxIoU over 15 thresholds in [0.2, 0.9] under the task's protocol."""
        return SaliencyMetrics(self.protocol)
