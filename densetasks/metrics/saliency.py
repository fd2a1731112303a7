"""Saliency metrics over a set: maximum F-measure and maximum IoU over thresholds, two protocols.

The probability map is binarised at 15 thresholds evenly spaced in [0.2, 0.9]; the best
threshold's F-measure and IoU are reported (each maximised on its own). Multi-task papers
score saliency in one of two ways, offered here by name:

``per_image_f1`` (the default)
    The evaluation code of Maninis et al. (CVPR 2019, ASTMT, ``eval_sal.py``), which
    Popovic et al. (CVPR 2021, Sec. 5) follow ("maximal mIoU over different thresholds ... in
    concordance with [34, 22]") and Multi-Task-Learning-PyTorch copies: a pixel is salient when
    ``p > t``; per image, precision ``P``, recall ``R`` (0 when undefined) and IoU (1 when
    neither label nor prediction has a salient pixel); ``maxIoU`` is the best mean IoU over
    the images, ``maxF`` the best ``F₁`` of the mean ``P`` and mean ``R`` (β = 1).
``pooled_beta2_0.3``
    The salient-object-detection convention (Achanta et al. 2009; later multi-task code such as
    InvPT's ``SaliencyMeter``): a pixel is salient when ``p ≥ t``; true / false positives and
    false negatives summed over the whole set, ``F`` with β² = 0.3 (precision weighted above
    recall) and ``IoU = TP / (TP + FP + FN)`` from the sums.

Both keep sum states (per-image precision, recall and IoU summed, plus an image count), so a
distributed evaluation stays one all-reduce.
"""

from typing import ClassVar, Literal, get_args

import numpy as np
import torch

from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import ConfigError
from densetasks.metrics.base import Metric
from densetasks.metrics.boundary import f_measure

SaliencyProtocol = Literal["per_image_f1", "pooled_beta2_0.3"]
SALIENCY_PROTOCOLS: tuple[str, ...] = get_args(SaliencyProtocol)

SALIENCY_BETA_SQUARED = 0.3
"""β² of the pooled protocol's F-measure (precision weighted above recall)."""

_PER_IMAGE_EPS = 1e-12
"""The ``+ 1e-12`` of the ASTMT code's ``tp / (tp + fp + 1e-12)`` and ``F₁`` denominator."""


class SaliencyMetrics(Metric):
    """``maxF`` and ``maxIoU`` in percent over ``thresholds`` thresholds in ``[low, high]``.

    Labels are 0 / 1 with ``IGNORE_INDEX`` left out. ``per_image_f1`` states: ``precision``,
    ``recall``, ``iou`` float64 ``[K]`` (sums over images) and ``images`` int64 (images with
    at least one labelled pixel; the others are skipped). ``pooled_beta2_0.3`` states: ``tp``,
    ``fp``, ``fn`` int64 ``[K]`` over every labelled pixel.
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"maxF": True, "maxIoU": True}
    units: ClassVar[dict[str, str]] = {"maxF": "%", "maxIoU": "%"}

    def __init__(
        self,
        protocol: SaliencyProtocol = "per_image_f1",
        thresholds: int = 15,
        low: float = 0.2,
        high: float = 0.9,
    ) -> None:
        super().__init__()
        if protocol not in SALIENCY_PROTOCOLS:
            raise ConfigError(
                f"saliency.protocol must be one of {', '.join(SALIENCY_PROTOCOLS)}, "
                f"got {protocol!r}"
            )
        if thresholds < 1 or not 0.0 <= low <= high <= 1.0:
            raise ConfigError(
                f"saliency thresholds need count >= 1 and 0 <= low <= high <= 1, "
                f"got {thresholds} in [{low}, {high}]"
            )
        self.protocol = protocol
        self.per_image = protocol == "per_image_f1"
        # NumPy's linspace, as ASTMT's ``np.linspace(0.2, 0.9, 15)``: torch.linspace puts 0.6 at
        # 0.6000000000000001, above an 8-bit map's 153 / 255 == 0.6
        self.thresholds = torch.from_numpy(np.linspace(low, high, thresholds))
        if self.per_image:
            for name in ("precision", "recall", "iou"):
                self.add_state(name, torch.zeros(thresholds, dtype=torch.float64))
            self.add_state("images", torch.zeros((), dtype=torch.int64))
        else:
            for name in ("tp", "fp", "fn"):
                self.add_state(name, torch.zeros(thresholds, dtype=torch.int64))

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add probabilities ``pred`` (float ``[B, H, W]``) and labels ``target`` (0/1/255)."""
        if pred.shape != target.shape or pred.ndim != 3:
            raise ValueError(
                f"saliency prediction {tuple(pred.shape)} and label {tuple(target.shape)} "
                "must both be [B, H, W]"
            )
        tp, fp, fn, labelled = self._counts(pred.detach().cpu().double(), target.cpu())
        if self.per_image:
            self._add_per_image(tp[labelled], fp[labelled], fn[labelled])
        else:
            self.set_state("tp", self.tp + tp.sum(0))
            self.set_state("fp", self.fp + fp.sum(0))
            self.set_state("fn", self.fn + fn.sum(0))

    def _counts(
        self, prob: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image and threshold, int64 ``[B, K]`` true / false positives and false negatives
        over the labelled pixels, and bool ``[B]``: the image has a labelled pixel.

        One histogram per image of (thresholds passed, label); the counts above each threshold
        are its reversed cumulative sum.
        """
        batch, bins = prob.shape[0], len(self.thresholds) + 1
        valid = target != IGNORE_INDEX
        # thresholds passed: t < p for the per-image protocol (ASTMT ``p > t``), t ≤ p pooled
        level = torch.searchsorted(self.thresholds, prob[valid], right=not self.per_image)
        image = torch.arange(batch)[:, None, None].expand_as(target)[valid]
        salient = (target[valid] == 1).long()
        index = (image * bins + level) * 2 + salient
        histogram = torch.bincount(index, minlength=batch * bins * 2).view(batch, bins, 2)
        above = histogram.flip(1).cumsum(1).flip(1)[:, 1:]  # [B, K, 2]: counts past t
        positives = histogram[:, :, 1].sum(1, keepdim=True)
        tp, fp = above[..., 1], above[..., 0]
        return tp, fp, positives - tp, valid.flatten(1).any(1)

    def _add_per_image(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> None:
        """Add each image's precision, recall and IoU (as the ASTMT code defines them)."""
        tp, fp, fn = tp.double(), fp.double(), fn.double()
        union = tp + fp + fn
        iou = torch.where(union > 0, tp / union.clamp(min=1), 1.0)
        self.set_state("precision", self.precision + (tp / (tp + fp + _PER_IMAGE_EPS)).sum(0))
        self.set_state("recall", self.recall + (tp / (tp + fn + _PER_IMAGE_EPS)).sum(0))
        self.set_state("iou", self.iou + iou.sum(0))
        self.set_state("images", self.images + tp.shape[0])

    def compute(self) -> dict[str, float]:
        """``maxF`` and ``maxIoU`` in percent (0 before any image or salient pixel)."""
        if self.per_image:
            precision, recall, iou = self._per_image_means()
            f = 2.0 * precision * recall / (precision + recall + _PER_IMAGE_EPS)
        else:
            tp, fp, fn = (state.double().numpy() for state in (self.tp, self.fp, self.fn))
            precision = tp / np.maximum(tp + fp, 1.0)
            recall = tp / np.maximum(tp + fn, 1.0)
            iou = tp / np.maximum(tp + fp + fn, 1.0)
            f = f_measure(precision, recall, SALIENCY_BETA_SQUARED)
        return {"maxF": 100.0 * float(f.max()), "maxIoU": 100.0 * float(iou.max())}

    def _per_image_means(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean precision, recall and IoU over the images, per threshold (0 before any)."""
        images = max(int(self.images), 1)
        return (
            self.precision.numpy() / images,
            self.recall.numpy() / images,
            self.iou.numpy() / images,
        )
