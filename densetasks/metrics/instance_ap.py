"""Instance mask AP by the Cityscapes protocol, from instance id maps and their classes.

Reproduces the official Cityscapes evaluation (``cityscapesscripts``,
``evaluation/evalInstanceLevelSemanticLabeling.py``) on id maps; ``docs/instances.md`` states
every rule and where it departs. In short, per instance class and IoU threshold ``t`` in
``0.5:0.05:0.95``:

* a predicted instance has the majority class of the predicted semantic map under it, a
  ground-truth instance the majority class of the ground-truth semantic label (void left out);
* ground truth smaller than the minimum region size is not evaluated;
* a prediction is a true positive if its IoU with a ground-truth instance of its class is
  above ``t`` (id maps are disjoint and ``t >= 0.5``, so a match is unique); otherwise it is
  a false positive unless more than ``t`` of its pixels are *ignored*: void (ground-truth
  semantic ``ignore_index``), its class's group region (pixels of its class without an
  instance id, Cityscapes' "cargroup"; counted twice when smaller than the minimum size, as
  the script does) and its class's too-small ground-truth instances;
* AP is the area under the precision-recall curve as the script integrates it (trapezoids
  through the points at every score level, from recall 0 at precision 1; no interpolation);
  ``ap`` is the mean over classes of the mean over thresholds, ``ap50``/``ap75`` the mean
  over classes at one threshold; classes without ground truth are left out.

An id map carries no confidence, so the score of a predicted instance is its pixel count.
``ap_agnostic`` / ``ap50_agnostic`` follow the same protocol with all instance classes taken
as one: any prediction may match any ground-truth instance.

Sum states for distributed evaluation: scores are quantised into logarithmic bins
(``bins_per_octave`` per doubling of the pixel count) and the states hold, per class, IoU
threshold and score bin, the numbers of true and of (counted) false positives, plus the number
of evaluated ground-truth instances per class. Predictions in one bin count as tied (at 128
bins per octave: sizes within 0.54 % of each other, every size below 185 px in its own bin);
the script gives every distinct score its own point of the curve.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from densetasks.data.sample import IGNORE_INDEX
from densetasks.metrics.base import Metric

IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * step, 2) for step in range(10))
"""The Cityscapes (and COCO) IoU thresholds 0.5, 0.55, ..., 0.95; a match needs IoU above."""

MAX_OCTAVES = 40
"""Score bins cover pixel counts up to ``2**40``."""

CITYSCAPES_MIN_REGION = 100.0
"""Cityscapes' ``minRegionSizes[0]``: ground truth below 100 pixels is not evaluated ..."""

CITYSCAPES_RESOLUTION = (1024, 2048)
"""... at the full Cityscapes resolution (height, width)."""

AGNOSTIC = 0
"""The one class of the class-agnostic evaluation."""

OTHER = -1
"""Class of an instance outside the evaluated classes (or of non-instance pixels)."""


@dataclass(frozen=True)
class InstanceMap:
    """Instance ids ``[B, H, W]`` (0 = no instance) with the per-pixel classes ``[B, H, W]``
    they are read with: the predicted semantic map for a prediction, the ground-truth semantic
    label (``ignore_index`` = void) for the ground truth."""

    ids: torch.Tensor
    semantic: torch.Tensor

    def cpu(self) -> "InstanceMap":
        return InstanceMap(self.ids.cpu(), self.semantic.cpu())


@dataclass(frozen=True)
class _Overlaps:
    """Pixel counts of one image that matching reads: predicted instances ``P`` against
    ground-truth instances ``G`` and against the ignore regions, with everyone's class."""

    intersection: np.ndarray  # [P, G]
    pred_sizes: np.ndarray  # [P]
    pred_classes: np.ndarray  # [P]
    true_sizes: np.ndarray  # [G]
    true_classes: np.ndarray  # [G]
    void: np.ndarray  # [P]: pixels on void
    groups: np.ndarray  # [P, C]: pixels on class c's group region
    group_sizes: np.ndarray  # [C]


class InstanceAPMetric(Metric):
    """``ap`` (IoU 0.5:0.95), ``ap50``, ``ap75``, ``ap_agnostic``, ``ap50_agnostic``, in percent
    (as every densetasks metric of that kind); higher is better.

    ``update`` takes :class:`InstanceMap` s (ids with classes) for prediction and ground truth.
    Without ``classes`` the metric has one class, every instance, and ``ap`` equals
    ``ap_agnostic``; so do plain id tensors ``[B, H, W]`` with ``classes=None``. With
    ``classes`` but a ground truth of plain ids (no semantic label), only the agnostic numbers
    are measured and the per-class ones stay NaN.

    The minimum region size is ``min_region_size`` pixels at an image of
    ``min_region_resolution`` pixels, scaled by the area of the evaluated image (Cityscapes'
    100 px at 1024×2048 by default); ``min_region_resolution=None`` makes it absolute.

    States: ``hits`` int64 ``[C, T, S, 2]`` (per class, IoU threshold and score bin: false
    positives in ``[..., 0]``, true positives in ``[..., 1]``), ``instances`` int64 ``[C]``
    (evaluated ground truth) and the same for the agnostic class, ``hits_agnostic`` and
    ``instances_agnostic``.
    """

    higher_is_better: ClassVar[dict[str, bool]] = {
        "ap": True,
        "ap50": True,
        "ap75": True,
        "ap_agnostic": True,
        "ap50_agnostic": True,
    }
    units: ClassVar[dict[str, str]] = dict.fromkeys(higher_is_better, "%")

    def __init__(
        self,
        classes: Sequence[int] | None = None,
        *,
        min_region_size: float = CITYSCAPES_MIN_REGION,
        min_region_resolution: tuple[int, int] | None = CITYSCAPES_RESOLUTION,
        ignore_index: int = IGNORE_INDEX,
        bins_per_octave: int = 128,
    ) -> None:
        super().__init__()
        if bins_per_octave < 1:
            raise ValueError(f"bins_per_octave must be >= 1, got {bins_per_octave}")
        if min_region_size < 0:
            raise ValueError(f"min_region_size must be >= 0, got {min_region_size}")
        self.classes = [] if classes is None else [int(value) for value in classes]
        self.min_region_size = min_region_size
        self.min_region_resolution = min_region_resolution
        self.ignore_index = ignore_index
        self.bins_per_octave = bins_per_octave
        shape = (len(IOU_THRESHOLDS), MAX_OCTAVES * bins_per_octave, 2)
        self.add_state("hits", torch.zeros((len(self.classes), *shape), dtype=torch.int64))
        self.add_state("instances", torch.zeros(len(self.classes), dtype=torch.int64))
        self.add_state("hits_agnostic", torch.zeros(shape, dtype=torch.int64))
        self.add_state("instances_agnostic", torch.zeros((), dtype=torch.int64))

    def update(self, pred: InstanceMap | torch.Tensor, target: InstanceMap | torch.Tensor) -> None:
        """Add one batch: predicted and ground-truth ids (int ``[B, H, W]``, 0 = no instance,
        ids per image), each with its classes as an :class:`InstanceMap`."""
        pred_ids, pred_semantic = _unpack(pred)
        true_ids, true_semantic = _unpack(target)
        if pred_ids.shape != true_ids.shape or pred_ids.ndim != 3:
            raise ValueError(
                f"instance ids must be [B, H, W] alike, got prediction {tuple(pred_ids.shape)} "
                f"and label {tuple(true_ids.shape)}"
            )
        if pred_ids.is_floating_point() or true_ids.is_floating_point():
            raise ValueError("instance ids must be integer tensors")
        by_class = bool(self.classes) and pred_semantic is not None and true_semantic is not None
        if self.classes and not by_class and pred_semantic is None:
            raise ValueError("per-class AP needs the predicted classes: pass an InstanceMap")
        hits, instances = self.hits.clone(), self.instances.clone()
        hits_agnostic = self.hits_agnostic.clone()
        instances_agnostic = self.instances_agnostic.clone()
        for image in range(pred_ids.shape[0]):
            pred_image, true_image = pred_ids[image].numpy(), true_ids[image].numpy()
            true_classes = None if true_semantic is None else true_semantic[image].numpy()
            agnostic = self._agnostic_overlaps(pred_image, true_image, true_classes)
            min_size = self.min_region_pixels(pred_image.shape)
            instances_agnostic += self._add_hits(
                hits_agnostic[None], agnostic, [AGNOSTIC], min_size
            )[0]
            if by_class:
                overlaps = _overlaps(
                    pred_image,
                    pred_semantic[image].numpy(),
                    true_image,
                    true_classes,
                    self.classes,
                    self.ignore_index,
                )
                instances += self._add_hits(hits, overlaps, self.classes, min_size)
        self.set_state("hits", hits)
        self.set_state("instances", instances)
        self.set_state("hits_agnostic", hits_agnostic)
        self.set_state("instances_agnostic", instances_agnostic)

    def _agnostic_overlaps(
        self, pred: np.ndarray, truth: np.ndarray, true_semantic: np.ndarray | None
    ) -> _Overlaps:
        """Overlaps with every evaluated class merged into :data:`AGNOSTIC` (void kept). The
        instance classes' pixels are those of ``classes`` in the semantic label; without
        ``classes`` or without a semantic label, the pixels of ground-truth instances."""
        if true_semantic is None or not self.classes:
            is_instance_class = truth > 0
        else:
            is_instance_class = np.isin(true_semantic, self.classes)
        merged = np.where(is_instance_class, AGNOSTIC, OTHER)
        if true_semantic is not None:
            merged = np.where(true_semantic == self.ignore_index, self.ignore_index, merged)
        everything = np.full_like(pred, AGNOSTIC)
        return _overlaps(pred, everything, truth, merged, [AGNOSTIC], self.ignore_index)

    def _add_hits(
        self, hits: torch.Tensor, overlaps: _Overlaps, classes: Sequence[int], min_size: float
    ) -> torch.Tensor:
        """Add one image's true and counted false positives to ``hits [C, T, S, 2]`` in place;
        return the number of evaluated ground-truth instances per class."""
        counts = torch.zeros(len(classes), dtype=torch.int64)
        bins = self._score_bins(overlaps.pred_sizes)
        for index, value in enumerate(classes):
            preds = overlaps.pred_classes == value
            truths = overlaps.true_classes == value
            large = overlaps.true_sizes >= min_size
            iou = _iou(overlaps, preds, truths & large)
            ignored = _ignored_pixels(overlaps, index, preds, truths & ~large, min_size)
            ignored_fraction = ignored / overlaps.pred_sizes[preds]
            counts[index] = int((truths & large).sum())
            for threshold_index, threshold in enumerate(IOU_THRESHOLDS):
                true_positive = (iou > threshold).any(axis=1)
                false_positive = ~true_positive & (ignored_fraction <= threshold)
                table = hits[index, threshold_index].numpy()
                np.add.at(table, (bins[preds][true_positive], 1), 1)
                np.add.at(table, (bins[preds][false_positive], 0), 1)
        return counts

    def min_region_pixels(self, shape: tuple[int, int]) -> float:
        """The minimum ground-truth size in pixels for an image of ``shape`` (height, width)."""
        if self.min_region_resolution is None:
            return self.min_region_size
        height, width = self.min_region_resolution
        return self.min_region_size * shape[0] * shape[1] / (height * width)

    def _score_bins(self, sizes: np.ndarray) -> np.ndarray:
        """Bin of each pixel count; larger counts get higher bins."""
        bins = np.floor(np.log2(np.maximum(sizes, 1)) * self.bins_per_octave).astype(np.int64)
        return bins.clip(0, MAX_OCTAVES * self.bins_per_octave - 1)

    def compute(self) -> dict[str, float]:
        """The class means and the agnostic numbers in percent; NaN without ground truth."""
        agnostic = _per_threshold(self.hits_agnostic, int(self.instances_agnostic))
        if self.classes:
            per_class = np.array(
                [
                    _per_threshold(self.hits[c], int(self.instances[c]))
                    for c in range(len(self.classes))
                ]
            )
        else:
            per_class = agnostic[None]
        return {
            "ap": _mean_over_classes(per_class.mean(axis=1)),
            "ap50": _mean_over_classes(per_class[:, IOU_THRESHOLDS.index(0.5)]),
            "ap75": _mean_over_classes(per_class[:, IOU_THRESHOLDS.index(0.75)]),
            "ap_agnostic": 100.0 * float(agnostic.mean()),
            "ap50_agnostic": 100.0 * float(agnostic[IOU_THRESHOLDS.index(0.5)]),
        }


def average_precision(hits: torch.Tensor, instances: int) -> float:
    """Area under the precision-recall curve from ``hits [S, 2]`` (false, true positives per
    score level, highest score first) and the number of ground-truth instances, integrated as
    the Cityscapes script does: trapezoids through the curve's points at every occupied score
    level, starting from the artificial point recall 0, precision 1. NaN without ground truth;
    0 without a true positive."""
    if instances == 0:
        return math.nan
    cumulative = hits.double().cumsum(0)[hits.sum(1) > 0]
    false_positives, true_positives = cumulative[:, 0], cumulative[:, 1]
    one = torch.ones(1, dtype=torch.float64)
    recall = torch.cat([one * 0, true_positives / instances])
    precision = torch.cat([one, true_positives / (true_positives + false_positives)])
    return float(((recall[1:] - recall[:-1]) * (precision[1:] + precision[:-1]) / 2).sum())


def _per_threshold(hits: torch.Tensor, instances: int) -> np.ndarray:
    """AP ``[T]`` of one class from its ``hits [T, S, 2]`` (lowest score bin first)."""
    return np.array([average_precision(hits[t].flip(0), instances) for t in range(len(hits))])


def _mean_over_classes(values: np.ndarray) -> float:
    """Percent mean over the classes that have ground truth (Cityscapes' ``nanmean``)."""
    present = values[~np.isnan(values)]
    return 100.0 * float(present.mean()) if present.size else math.nan


def _unpack(value: InstanceMap | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Ids and classes (``None`` for plain ids), on the CPU."""
    if isinstance(value, InstanceMap):
        return value.ids.cpu(), value.semantic.cpu()
    return value.cpu(), None


def _overlaps(
    pred: np.ndarray,
    pred_semantic: np.ndarray,
    truth: np.ndarray,
    true_semantic: np.ndarray,
    classes: Sequence[int],
    ignore_index: int,
) -> _Overlaps:
    """Every pixel count matching needs, from one joint histogram per question."""
    pred_ids, pred_index = np.unique(pred, return_inverse=True)
    true_ids, true_index = np.unique(truth, return_inverse=True)
    pred_index, true_index = pred_index.ravel(), true_index.ravel()
    pred_semantic, true_semantic = pred_semantic.ravel(), true_semantic.ravel()
    is_pred, is_true = pred_ids > 0, true_ids > 0
    joint = _joint(pred_index, len(pred_ids), true_index, len(true_ids))
    void = true_semantic == ignore_index
    class_index = _class_index(true_semantic, classes)
    group = (truth.ravel() == 0) & (class_index < len(classes))
    groups = _joint(pred_index[group], len(pred_ids), class_index[group], len(classes))
    return _Overlaps(
        intersection=joint[is_pred][:, is_true],
        pred_sizes=joint.sum(1)[is_pred],
        pred_classes=_majority(pred_index, pred_semantic, len(pred_ids))[is_pred],
        true_sizes=joint.sum(0)[is_true],
        true_classes=_majority(true_index[~void], true_semantic[~void], len(true_ids))[is_true],
        void=np.bincount(pred_index[void], minlength=len(pred_ids))[is_pred],
        groups=groups[is_pred],
        group_sizes=np.bincount(class_index[group], minlength=len(classes)),
    )


def _joint(
    first: np.ndarray, first_count: int, second: np.ndarray, second_count: int
) -> np.ndarray:
    """Joint histogram ``[first_count, second_count]`` of two index arrays."""
    flat = np.bincount(first * second_count + second, minlength=first_count * second_count)
    return flat.reshape(first_count, second_count)


def _class_index(semantic: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Position of each pixel's class in ``classes``; ``len(classes)`` for any other value."""
    lookup = {value: index for index, value in enumerate(classes)}
    values, inverse = np.unique(semantic, return_inverse=True)
    positions = np.array([lookup.get(int(value), len(classes)) for value in values], np.int64)
    return positions[inverse.ravel()]


def _majority(index: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """The most frequent of ``values`` per ``index`` in ``0..count-1`` (ties: the smallest
    value); :data:`OTHER` where an index has no value."""
    distinct, inverse = np.unique(values, return_inverse=True)
    if distinct.size == 0:
        return np.full(count, OTHER, dtype=np.int64)
    counts = _joint(index, count, inverse.ravel(), len(distinct))
    return np.where(counts.sum(1) > 0, distinct[counts.argmax(1)], OTHER).astype(np.int64)


def _iou(overlaps: _Overlaps, preds: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """IoU ``[p, g]`` between the selected predictions and ground-truth instances."""
    intersection = overlaps.intersection[preds][:, truths]
    union = overlaps.pred_sizes[preds, None] + overlaps.true_sizes[None, truths] - intersection
    return intersection / np.maximum(union, 1)


def _ignored_pixels(
    overlaps: _Overlaps, class_index: int, preds: np.ndarray, small: np.ndarray, min_size: float
) -> np.ndarray:
    """Ignored pixels of the selected predictions (Cityscapes' ``nbIgnorePixels``): on void,
    on their class's group region (twice if that region is below ``min_size``, as the script
    adds a small group once as a group and once as small) and on too-small instances."""
    group_size = overlaps.group_sizes[class_index]
    group_weight = 2 if 0 < group_size < min_size else 1
    return (
        overlaps.void[preds]
        + group_weight * overlaps.groups[preds, class_index]
        + overlaps.intersection[preds][:, small].sum(1)
    )
