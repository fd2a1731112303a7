"""Instance mask AP, COCO style, from instance id maps.

Predicted instances are matched to ground-truth instances by mask IoU, greedily in order of
decreasing score (COCO ``evaluate``): a prediction takes the unmatched ground-truth instance
of highest IoU at or above the threshold, else it is a false positive. An id map carries no
confidence, so the score of a predicted instance is its pixel count (large instances first).
Precision is made monotone and read at the 101 recall points ``0, 0.01, ..., 1`` (COCO's
interpolation); AP is their mean, ``ap`` averages it over the IoU thresholds
``0.5:0.05:0.95``.

Sum states for distributed evaluation: scores are quantised into logarithmic bins
(``bins_per_octave`` per doubling of the pixel count) and the state holds, per IoU threshold
and score bin, the number of true and of false positives, plus the number of ground-truth
instances. The precision-recall curve is read at bin boundaries, so predictions in one bin
count as tied. That is exact whenever no bin holds both a true and a false positive (a run
of true positives only raises precision, a run of false positives only lowers it, so the
interpolated curve is unchanged); otherwise the bin's true and false positives are taken
together, as for equal scores (scikit-learn's ``average_precision_score`` treats ties so).
COCO's per-image limit of 100 detections and its area ranges are left out.
"""

import math
from typing import ClassVar

import numpy as np
import torch

from densetasks.metrics.base import Metric

IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * step, 2) for step in range(10))
"""COCO's IoU thresholds 0.5, 0.55, ..., 0.95."""

RECALL_POINTS = torch.linspace(0, 1, 101, dtype=torch.float64)
"""COCO's 101 recall points at which precision is read."""

MAX_OCTAVES = 40
"""Score bins cover pixel counts up to ``2**40``."""


class InstanceAPMetric(Metric):
    """``ap`` (IoU 0.5:0.95), ``ap50`` and ``ap75`` in percent (as every densetasks
    metric of that kind); higher is better.

    States: ``hits`` int64 ``[T, S, 2]`` (per IoU threshold and score bin: false positives
    in ``[..., 0]``, true positives in ``[..., 1]``) and ``instances`` int64 (ground truth).
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"ap": True, "ap50": True, "ap75": True}

    def __init__(self, *, bins_per_octave: int = 32) -> None:
        super().__init__()
        if bins_per_octave < 1:
            raise ValueError(f"bins_per_octave must be >= 1, got {bins_per_octave}")
        self.bins_per_octave = bins_per_octave
        bins = MAX_OCTAVES * bins_per_octave
        self.add_state("hits", torch.zeros((len(IOU_THRESHOLDS), bins, 2), dtype=torch.int64))
        self.add_state("instances", torch.zeros((), dtype=torch.int64))

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add predicted ids ``pred`` and ground-truth ids ``target`` (int ``[B, H, W]``,
        0 = no instance; ids are per image)."""
        if pred.shape != target.shape or pred.ndim != 3:
            raise ValueError(
                f"instance ids must be [B, H, W] alike, got prediction {tuple(pred.shape)} "
                f"and label {tuple(target.shape)}"
            )
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError("instance ids must be integer tensors")
        hits = self.hits.clone()
        instances = int(self.instances)
        for image_pred, image_target in zip(pred.cpu().numpy(), target.cpu().numpy(), strict=True):
            iou, sizes, truths = _mask_ious(image_pred, image_target)
            instances += truths
            order = np.argsort(-sizes, kind="stable")
            score_bins = self._score_bins(sizes[order])
            for threshold_index, threshold in enumerate(IOU_THRESHOLDS):
                matched = _greedy_match(iou[order], threshold)
                np.add.at(hits[threshold_index].numpy(), (score_bins, matched.astype(int)), 1)
        self.set_state("hits", hits)
        self.set_state("instances", torch.tensor(instances, dtype=torch.int64))

    def _score_bins(self, sizes: np.ndarray) -> np.ndarray:
        """Bin of each pixel count; larger counts get higher bins."""
        bins = np.floor(np.log2(sizes) * self.bins_per_octave).astype(np.int64)
        return bins.clip(0, MAX_OCTAVES * self.bins_per_octave - 1)

    def compute(self) -> dict[str, float]:
        """``ap``, ``ap50``, ``ap75`` in percent; NaN before any ground-truth instance."""
        instances = int(self.instances)
        if instances == 0:
            return {name: math.nan for name in self.higher_is_better}
        per_threshold = [
            average_precision(self.hits[t].flip(0), instances) for t in range(len(IOU_THRESHOLDS))
        ]
        return {
            "ap": 100.0 * float(np.mean(per_threshold)),
            "ap50": 100.0 * per_threshold[IOU_THRESHOLDS.index(0.5)],
            "ap75": 100.0 * per_threshold[IOU_THRESHOLDS.index(0.75)],
        }


def average_precision(hits: torch.Tensor, instances: int) -> float:
    """COCO's 101-point interpolated AP from ``hits [S, 2]`` (false, true positives per score
    level, highest score first) and the number of ground-truth instances."""
    cumulative = hits.double().cumsum(0)
    false_positives, true_positives = cumulative[:, 0], cumulative[:, 1]
    level_seen = hits.sum(1) > 0
    recall = (true_positives / instances)[level_seen]
    precision = (true_positives / (true_positives + false_positives).clamp(min=1))[level_seen]
    envelope = precision.flip(0).cummax(0).values.flip(0)
    positions = torch.searchsorted(recall, RECALL_POINTS)
    reached = positions < len(recall)
    read = torch.zeros_like(RECALL_POINTS)
    read[reached] = envelope[positions[reached]]
    return float(read.mean())


def _mask_ious(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """IoU ``[P, G]`` between the predicted and true instances of one image (one joint
    histogram), the predicted instances' pixel counts ``[P]`` and ``G``."""
    pred_ids, pred_index = np.unique(pred, return_inverse=True)
    true_ids, true_index = np.unique(target, return_inverse=True)
    joint = np.bincount(
        pred_index.ravel() * len(true_ids) + true_index.ravel(),
        minlength=len(pred_ids) * len(true_ids),
    ).reshape(len(pred_ids), len(true_ids))
    joint = joint[pred_ids > 0][:, true_ids > 0]
    pred_sizes = np.bincount(pred_index.ravel(), minlength=len(pred_ids))[pred_ids > 0]
    true_sizes = np.bincount(true_index.ravel(), minlength=len(true_ids))[true_ids > 0]
    union = pred_sizes[:, None] + true_sizes[None, :] - joint
    return joint / np.maximum(union, 1), pred_sizes, len(true_sizes)


def _greedy_match(iou: np.ndarray, threshold: float) -> np.ndarray:
    """For predictions in score order (rows of ``iou``): is each a true positive? Each takes
    the free ground truth of highest IoU at or above ``threshold`` (COCO ``evaluateImg``)."""
    free = np.ones(iou.shape[1], dtype=bool)
    matched = np.zeros(iou.shape[0], dtype=bool)
    for row in range(iou.shape[0]):
        candidates = np.where(free & (iou[row] >= threshold), iou[row], -1.0)
        if candidates.size and candidates.max() >= 0:
            best = int(candidates.argmax())
            free[best] = False
            matched[row] = True
    return matched
