"""Semantic edges: one logit per pixel, weighted BCE (Popovic et al., CVPR 2021), BSDS-style
odsF / oisF / AP.

Also home of :class:`BinaryMapTask`, the parts every one-channel binary task shares (edges,
saliency): head size, sigmoid decode, grey-scale drawing and the composite-space mapping.
"""

from abc import abstractmethod

import numpy as np
import torch
import torch.nn.functional as F

from densetasks.data.sample import IGNORE_INDEX, LabelKind
from densetasks.errors import ConfigError, DataError
from densetasks.metrics.boundary import BoundaryMetrics, Tolerance
from densetasks.tasks._common import masked_mean
from densetasks.tasks.base import Likelihood, Meaning, Task

COMPOSITE_CLAMP = 1e-4
"""Labels 0 / 1 are clamped to ``[COMPOSITE_CLAMP, 1 − COMPOSITE_CLAMP]`` before the inverse
sigmoid in :meth:`BinaryMapTask.to_composite`, so they map to finite logits (±9.21)."""

IGNORE_COLOUR = np.array([0, 0, 96], dtype=np.uint8)
"""Ignored label pixels are drawn dark blue, so they never look like a probability."""


class BinaryMapTask(Task):
    """A task with one logit per pixel and a BINARY label (0 / 1, ``IGNORE_INDEX`` ignored).

    Subclasses choose the class weights of the binary cross-entropy
    (:meth:`class_weights`) and the metrics. ``decode`` returns the probability of the
    positive class as float ``[B, H, W]``, the label's layout, so metrics and drawing read a
    label and a prediction alike.
    """

    label_kind = LabelKind.BINARY
    likelihood = Likelihood.CLASSIFICATION
    picture_colours = "black 0 → white 1"

    @property
    def channels(self) -> int:
        return 1

    @abstractmethod
    def class_weights(
        self, target: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """Weights ``(positive, negative)`` of the cross-entropy for this batch."""

    def loss(
        self, output: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Class-weighted BCE, averaged over the valid pixels of ``label`` within ``mask``:

        ``mean_valid( −w₊·y·log σ(x) − w₋·(1 − y)·log(1 − σ(x)) )``.
        """
        self.check_output(output, label)
        valid = self.valid(label, mask)
        if (valid & (label > 1)).any():
            raise DataError(
                f"{self.name} label has values other than 0, 1 and {IGNORE_INDEX} "
                f"(found {label[valid].max().item()})"
            )
        target = (label == 1) & valid
        positive, negative = self.class_weights(target, valid)
        weight = torch.where(
            target, torch.as_tensor(positive).to(output), torch.as_tensor(negative).to(output)
        )
        per_pixel = F.binary_cross_entropy_with_logits(
            output[:, 0], target.to(output.dtype), weight=weight, reduction="none"
        )
        return masked_mean(per_pixel, valid)

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """Probability of the positive class, float ``[B, H, W]``."""
        return torch.sigmoid(output[:, 0])

    def meaning(self) -> Meaning:
        """The probability ``[B, H, W]`` of the positive class (an edge, a salient pixel)."""
        return Meaning(f"{self.name}: probability of the positive class", value_range=(0.0, 1.0))

    def visualize(self, value: torch.Tensor) -> np.ndarray:
        """A probability map or a 0/1 label ``[H, W]`` as grey levels (1 = white).

        Ignored pixels of a uint8 label are drawn in :data:`IGNORE_COLOUR`.
        """
        if value.ndim != 2:
            raise ValueError(f"{self.name} visualize expects [H, W], got {tuple(value.shape)}")
        array = value.detach().cpu()
        ignored = (array == IGNORE_INDEX).numpy() if array.dtype == torch.uint8 else None
        grey = (array.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()
        image = np.repeat(grey[..., None], 3, axis=-1)
        if ignored is not None:
            image[ignored] = IGNORE_COLOUR
        return image

    def from_composite(self, composite: torch.Tensor) -> torch.Tensor:
        """The mean of the three composite channels as the logit (Popovic et al., CVPR 2021,
        Sec. 3.3)."""
        return composite.mean(dim=1, keepdim=True)

    def to_composite(self, label: torch.Tensor) -> torch.Tensor:
        """``logit(clamp(y))`` on all three channels (±9.21); ignored pixels -> 0.

        The same value on every channel makes :meth:`from_composite` return it unchanged, so
        ``decode(from_composite(to_composite(label)))`` rounds back to the label.
        """
        valid = self.valid(label)
        probability = (label == 1).float().clamp(COMPOSITE_CLAMP, 1.0 - COMPOSITE_CLAMP)
        logit = torch.logit(probability) * valid
        return logit.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


class Edges(BinaryMapTask):
    """Semantic boundaries (Popovic et al., CVPR 2021, Sec. 4): weighted BCE, 0.95 on edges,
    0.05 elsewhere.

    Edges are rare (a few percent of the pixels), so positives weigh ``pos_weight`` and negatives
    ``neg_weight`` (Popovic et al., CVPR 2021, supplementary: 0.95 / 0.05; the DenseMTL code uses
    the same weights in a 2-class cross-entropy). Metrics: :class:`BoundaryMetrics` (the BSDS
    protocol) with ``thresholds`` thresholds, tolerance ``max_dist`` × image diagonal — a number
    or a dataset preset, ``"bsds"`` / ``"pascal"`` (0.0075) or ``"nyud"`` (0.011) — and optional
    non-maximum suppression ``nms``.
    """

    name = "edges"
    primary_metric = "odsF"

    def __init__(
        self,
        *,
        pos_weight: float = 0.95,
        neg_weight: float = 0.05,
        thresholds: int = 99,
        max_dist: Tolerance = 0.0075,
        nms: bool = True,
    ) -> None:
        if pos_weight < 0 or neg_weight < 0 or pos_weight + neg_weight == 0:
            raise ConfigError(
                f"{self.name}.pos_weight and neg_weight must be >= 0 and not both 0, "
                f"got {pos_weight} and {neg_weight}"
            )
        self.pos_weight = pos_weight
        self.neg_weight = neg_weight
        self.thresholds = thresholds
        self.max_dist = max_dist
        self.nms = nms
        self.metrics()  # checks the metric options now, not at the first evaluation

    def class_weights(self, target: torch.Tensor, valid: torch.Tensor) -> tuple[float, float]:
        """The fixed weights ``(pos_weight, neg_weight)``."""
        return self.pos_weight, self.neg_weight

    def metrics(self) -> BoundaryMetrics:
        return BoundaryMetrics(thresholds=self.thresholds, max_dist=self.max_dist, nms=self.nms)
