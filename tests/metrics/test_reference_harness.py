"""Every metric class through the reference harness (``harness.py``): one row per metric
configuration — factory, reference, tolerance, cases — and every case checked against the
reference one batch at a time, re-split, after a reset and summed over two ranks. Each row
has a ``perfect`` case, from which ``higher_is_better`` is checked key by key. The last
tests plant a wrong reference or a broken metric and see the harness fail.

References (``references.py``, ``instance_references.py``): NumPy written from each protocol
for the dense metrics, scikit-image thinning and augmenting-path matching for BSDS edges,
``cityscapesscripts`` for instance AP, scikit-learn's DBSCAN for the grouping of votes.
"""

import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

import numpy as np
import pytest
import torch

import densetasks.metrics
from densetasks.data.sample import IGNORE_INDEX
from densetasks.metrics.base import Metric
from densetasks.metrics.boundary import BoundaryMetrics
from densetasks.metrics.depth import DepthMetrics
from densetasks.metrics.instance_ap import InstanceAPMetric, InstanceMap
from densetasks.metrics.instance_grouping import GroupingConfig
from densetasks.metrics.instance_segmentation import (
    InstancePrediction,
    InstanceSegmentationMetrics,
)
from densetasks.metrics.normals import NormalsMetrics
from densetasks.metrics.offsets import OffsetErrorMetric
from densetasks.metrics.saliency import SALIENCY_PROTOCOLS, SaliencyMetrics
from densetasks.metrics.segmentation import ConfusionMatrixMetric

from . import instance_references, references
from .harness import Case, Reference, Tolerance, check_directions, check_metric, split
from .scenes import (
    BACKGROUND,
    CAR,
    PERSON,
    REALISTIC_KINDS,
    instance_scene,
    realistic_prediction,
    segment_boundaries,
    vote_scene,
)


@dataclass(frozen=True)
class Row:
    """One metric configuration and what it is checked on."""

    name: str
    factory: Callable[[], Metric]
    reference: Reference
    cases: Callable[[], list[Case]]
    tolerance: Tolerance = field(default_factory=Tolerance)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- semantic segmentation -------------------------------------------------------------------

CLASSES = 5


def segmentation_cases() -> list[Case]:
    g = generator(0)
    target = torch.randint(0, CLASSES + 1, (8, 9, 11), generator=g)
    target[target == CLASSES] = IGNORE_INDEX
    pred = torch.randint(0, CLASSES, (8, 9, 11), generator=g)
    ignored_batch = target.clone()
    ignored_batch[2:4] = IGNORE_INDEX
    few_classes = torch.randint(0, 3, (6, 9, 11), generator=g)  # 3, 4 never labelled
    predicted_unlabelled = torch.randint(0, 4, (6, 9, 11), generator=g)  # 3 predicted, 4 never
    labelled = target != IGNORE_INDEX
    return [
        split("random", pred, target, [2, 2, 2, 2]),
        split("ignored_batch", pred, ignored_batch, [2, 2, 2, 2]),
        split("class_absent_or_never_labelled", predicted_unlabelled, few_classes, [3, 1, 2]),
        split("perfect", torch.where(labelled, target, 0), target, [4, 4]),
        split("all_wrong", torch.where(labelled, (target + 1) % CLASSES, 0), target, [4, 4]),
        split("all_ignored", pred, torch.full_like(target, IGNORE_INDEX), [4, 4]),
    ]


# --- depth ------------------------------------------------------------------------------------


def depth_cases(far: bool = False) -> list[Case]:
    g = generator(1)
    target = 0.5 + 10 * torch.rand(6, 1, 7, 9, generator=g)
    target[torch.rand(target.shape, generator=g) < 0.3] = 0.0
    if far:
        target[torch.rand(target.shape, generator=g) < 0.1] = 1e5  # stereo noise past max_depth
    pred = 0.5 + 10 * torch.rand(6, 1, 7, 9, generator=g)
    unlabelled_batch = target.clone()
    unlabelled_batch[:2] = 0.0
    return [
        split("random", pred, target, [2, 2, 2]),
        split("unlabelled_batch", pred, unlabelled_batch, [2, 2, 2]),
        split("perfect", torch.where(target > 0, target, 1.0), target, [3, 3]),
        split("all_unlabelled", pred, torch.zeros_like(target), [3, 3]),
    ]


def aligned_depth_cases() -> list[Case]:
    """Raw outputs of a scale-and-shift-invariant head: noisy affine disparities of either
    sign, an image with a constant output, an image without labels; max_depth 8 m."""
    g = generator(2)
    target = 0.5 + 9.5 * torch.rand(6, 1, 7, 9, generator=g, dtype=torch.float64)
    target[torch.rand(target.shape, generator=g) < 0.2] = 0.0
    disparity = torch.where(target > 0, 1 / target.clamp(min=1e-6), 0.0)
    scale = torch.tensor([3.0, -2.0, 0.5, 1.0, -1.0, 4.0], dtype=torch.float64).view(-1, 1, 1, 1)
    exact = scale * disparity + 0.3
    noisy = exact + 0.05 * torch.randn(target.shape, generator=g, dtype=torch.float64)
    noisy[3] = 0.7  # constant: aligned to the mean disparity
    with_empty = target.clone()
    with_empty[4] = 0.0
    return [
        split("noisy_affine", noisy, target, [2, 2, 2]),
        split("unlabelled_image", noisy, with_empty, [1, 2, 3]),
        split("perfect", exact, target, [3, 3]),
        split("random", torch.randn(target.shape, generator=g, dtype=torch.float64), target, [6]),
    ]


# --- normals ----------------------------------------------------------------------------------


def normals_cases() -> list[Case]:
    g = generator(3)
    target = torch.randn(6, 3, 6, 7, generator=g)
    target[:, :, :2] = 0.0  # unlabelled rows
    pred = torch.randn(6, 3, 6, 7, generator=g)
    pred[:, :, 5, :2] = 0.0  # zero predictions: 90° off
    unlabelled_batch = target.clone()
    unlabelled_batch[2:4] = 0.0
    return [
        split("random", pred, target, [2, 2, 2]),
        split("unlabelled_batch", pred, unlabelled_batch, [2, 2, 2]),
        split("perfect", 2 * target, target, [3, 3]),
        split("opposite", -target, target, [3, 3]),
        split("all_unlabelled", pred, torch.zeros_like(target), [3, 3]),
    ]


# --- offsets ----------------------------------------------------------------------------------


def offsets_cases() -> list[Case]:
    g = generator(4)
    ids = torch.randint(0, 6, (5, 12, 14), generator=g)
    pred = 3 * torch.randn(5, 2, 12, 14, generator=g)
    no_instances = ids.clone()
    no_instances[1:3] = 0
    single_pixels = torch.arange(1, 5 * 12 * 14 + 1).view(5, 12, 14) * (ids > 2)
    exact = torch.stack([torch.from_numpy(references.true_offsets(image)) for image in ids.numpy()])
    return [
        split("random", pred, ids, [2, 2, 1]),
        split("no_instances_batch", pred, no_instances, [1, 2, 2]),
        split("single_pixel_instances", pred, single_pixels, [2, 3]),
        split("perfect", exact.float(), ids, [2, 3]),
        split("no_instances", pred, torch.zeros_like(ids), [2, 3]),
    ]


# --- saliency ---------------------------------------------------------------------------------


def saliency_cases() -> list[Case]:
    g = generator(5)
    label = (torch.rand(8, 12, 16, generator=g) > 0.6).to(torch.uint8)
    label[torch.rand(8, 12, 16, generator=g) > 0.9] = IGNORE_INDEX
    label[:, 0, 0] = 1  # every image has a salient pixel ...
    random_label = label.clone()
    random_label[3] = IGNORE_INDEX  # ... except one without labelled pixels
    random_label[5][random_label[5] == 1] = 0  # and one without salient pixels
    prob = 0.6 * torch.rand(8, 12, 16, generator=g) + 0.35 * (random_label == 1)
    # probabilities exactly on thresholds: salient for p ≥ t (pooled), not for p > t (per image)
    on_threshold = torch.from_numpy(references.SALIENCY_THRESHOLDS)
    tied = on_threshold[torch.randint(0, len(on_threshold), label.shape, generator=g)]
    # a map read from an 8-bit PNG: salient pixels at 153 / 255 == 0.6, on the 9th threshold
    levels = torch.where(label == 1, 153, torch.randint(0, 150, label.shape, generator=g))
    eight_bit = levels.double() / 255
    ignored_batch = label.clone()
    ignored_batch[:2] = IGNORE_INDEX
    return [
        split("random", prob, random_label, [3, 3, 2]),
        split("probabilities_on_thresholds", tied, label, [4, 4]),
        split("eight_bit_map", eight_bit, label, [3, 5]),
        split("ignored_batch", prob, ignored_batch, [2, 3, 3]),
        split("perfect", (label == 1).float(), label, [4, 4]),
        split("all_wrong", (label == 0).float(), label, [4, 4]),
        split("all_ignored", prob, torch.full_like(label, IGNORE_INDEX), [4, 4]),
    ]


# --- boundaries -------------------------------------------------------------------------------

EDGE_SIZE = (20, 24)


def line_labels(images: int) -> torch.Tensor:
    """One-pixel vertical and horizontal lines that do not touch (thinning keeps them), a
    corner ignored."""
    label = torch.zeros(images, *EDGE_SIZE, dtype=torch.uint8)
    for image in range(images):
        label[image, :, 4 + 3 * image] = 1
        label[image, 6 + image, 16:] = 1
    label[:, :3, :3] = IGNORE_INDEX
    return label


def boundary_cases() -> list[Case]:
    g = generator(6)
    label = (torch.rand(6, *EDGE_SIZE, generator=g) > 0.85).to(torch.uint8)
    label[torch.rand(6, *EDGE_SIZE, generator=g) > 0.9] = IGNORE_INDEX
    label[1] = 0  # an image without edges
    prob = torch.rand(6, *EDGE_SIZE, generator=g, dtype=torch.float64)
    lines = line_labels(4)
    far = torch.roll(lines, shifts=(5, 7), dims=(1, 2)).clamp(max=1).double()
    ignored_batch = label.clone()
    ignored_batch[:2] = IGNORE_INDEX
    # a map read from an 8-bit PNG, with values on the thresholds 0.2, 0.4, 0.6 (51, 102, 153)
    levels = torch.tensor([0, 51, 102, 153, 204, 255])
    eight_bit = levels[torch.randint(0, 6, label.shape, generator=g)].double() / 255
    return [
        split("random", prob, label, [2, 2, 2]),
        split("eight_bit_map", eight_bit, label, [3, 3]),
        split("ignored_batch", prob, ignored_batch, [2, 2, 2]),
        split("perfect", (lines == 1).double(), lines, [2, 2]),
        split("all_wrong", far, lines, [1, 3]),
        split("all_ignored", prob, torch.full_like(label, IGNORE_INDEX), [3, 3]),
    ]


def realistic_boundary_cases() -> list[Case]:
    """Blurred, doubled, plateau, shifted and cluttered maps of wavy boundaries, after NMS."""
    rng = np.random.default_rng(7)
    gts = [segment_boundaries(*EDGE_SIZE, 4, rng) for _ in REALISTIC_KINDS]
    prob = np.stack(
        [realistic_prediction(k, gt, rng) for k, gt in zip(REALISTIC_KINDS, gts, strict=True)]
    )
    label = torch.from_numpy(np.stack(gts).astype(np.uint8))
    label[:, :4, :6] = IGNORE_INDEX
    lines = line_labels(2)
    return [
        split("realistic", torch.from_numpy(prob), label, [2, 3]),
        split("perfect", (lines == 1).double(), lines, [1, 1]),
    ]


# --- instances --------------------------------------------------------------------------------


def instance_maps(scenes) -> tuple[InstanceMap, InstanceMap]:
    true_ids, semantic, pred_ids, pred_semantic = (
        torch.from_numpy(np.stack(arrays)) for arrays in zip(*scenes, strict=True)
    )
    return InstanceMap(pred_ids, pred_semantic), InstanceMap(true_ids, semantic)


def instance_ap_cases() -> list[Case]:
    rng = np.random.default_rng(8)
    pred, truth = instance_maps([instance_scene(rng) for _ in range(5)])
    perfect_semantic = torch.where(truth.ids > 0, truth.semantic, BACKGROUND)
    perfect = InstanceMap(truth.ids * 3, perfect_semantic)
    swapped = InstanceMap(truth.ids, torch.where(truth.ids > 0, PERSON + CAR - truth.semantic, 0))
    empty_truth = InstanceMap(torch.zeros_like(truth.ids), torch.zeros_like(truth.semantic))
    without_truth = InstanceMap(truth.ids.clone(), truth.semantic.clone())
    without_truth.ids[1:3], without_truth.semantic[1:3] = 0, BACKGROUND
    return [
        split("scenes", pred, truth, [2, 2, 1]),
        split("images_without_ground_truth", pred, without_truth, [1, 2, 2]),
        split("perfect", perfect, truth, [3, 2]),
        split("no_predictions", InstanceMap(torch.zeros_like(pred.ids), pred.semantic), truth, [5]),
        split("wrong_classes", swapped, truth, [2, 3]),
        split("no_ground_truth", pred, empty_truth, [2, 3]),
    ]


def plain_id_cases() -> list[Case]:
    """Id tensors without classes: every instance is of the one class."""
    rng = np.random.default_rng(9)
    pred, truth = instance_maps([instance_scene(rng) for _ in range(4)])
    without_instances = truth.ids.clone()
    without_instances[2] = 0
    return [
        split("scenes", pred.ids, truth.ids, [2, 2]),
        split("image_without_instances", pred.ids, without_instances, [1, 3]),
        split("perfect", truth.ids, truth.ids, [2, 2]),
    ]


VOTE_SIZE = (32, 48)


def instance_segmentation_cases() -> list[Case]:
    rng = np.random.default_rng(10)
    ids, semantic, offsets, pred_semantic = (
        torch.from_numpy(np.stack(arrays))
        for arrays in zip(*[vote_scene(rng, VOTE_SIZE) for _ in range(3)], strict=True)
    )
    offsets = offsets.float()
    pred = InstancePrediction(offsets, pred_semantic)
    truth = InstanceMap(ids, semantic)
    exact = torch.stack([torch.from_numpy(references.true_offsets(i)) for i in ids.numpy()])
    return [
        split("votes", pred, truth, [2, 1]),
        split("ids_without_classes", pred, ids, [1, 2]),
        split("offsets_only", offsets, truth, [2, 1]),
        split("perfect", InstancePrediction(exact.float(), semantic), truth, [1, 2]),
    ]


# --- the table --------------------------------------------------------------------------------

ABSOLUTE_MIN_REGION = {"min_region_size": 30, "min_region_resolution": None}
"""Scenes of 24×36 px: instances of 4–29 px are too small to be evaluated, 30–144 px are."""
SCALED_MIN_REGION = 100 * VOTE_SIZE[0] * VOTE_SIZE[1] / (1024 * 2048)
"""Cityscapes' 100 px at 1024×2048 scaled to the image (``InstanceAPMetric``'s default)."""

ROWS = [
    Row(
        "semseg",
        partial(ConfusionMatrixMetric, CLASSES),
        partial(references.segmentation, num_classes=CLASSES),
        segmentation_cases,
    ),
    Row("depth", DepthMetrics, references.depth, depth_cases),
    Row(
        "depth_capped_disparity",
        partial(DepthMetrics, max_depth=8.0, disparity_scale=59.2),
        partial(references.depth, max_depth=8.0, disparity_scale=59.2),
        partial(depth_cases, far=True),
    ),
    Row(
        "depth_ssi",
        partial(DepthMetrics, align_scale_shift=True, max_depth=8.0),
        partial(references.depth, align_scale_shift=True, max_depth=8.0),
        aligned_depth_cases,
        Tolerance(rel=1e-7, default_abs=1e-9),  # lstsq vs the centred closed form
    ),
    Row(
        "normals",
        NormalsMetrics,
        references.normals,
        normals_cases,
        # arccos loses ~1e-6° near 0°; the median is read from 0.01° bins
        Tolerance(default_abs=1e-5, abs={"median": 0.005 + 1e-5}),
    ),
    Row(
        "normals_coarse_bins",
        partial(NormalsMetrics, bin_width=0.5),
        references.normals,
        normals_cases,
        Tolerance(default_abs=1e-5, abs={"median": 0.25 + 1e-5}),
    ),
    Row(
        "offsets",
        OffsetErrorMetric,
        references.offsets,
        offsets_cases,
        Tolerance(default_abs=1e-6),  # the metric's true offsets are float32
    ),
    *(
        Row(
            f"saliency_{protocol}",
            partial(SaliencyMetrics, protocol),
            partial(references.saliency, protocol=protocol),
            saliency_cases,
        )
        for protocol in SALIENCY_PROTOCOLS
    ),
    Row(
        "edges",
        partial(BoundaryMetrics, thresholds=9, max_dist=0.05, nms=False),
        partial(references.boundary, thresholds=9, max_dist=0.05, nms=False),
        boundary_cases,
    ),
    Row(
        "edges_nms",
        partial(BoundaryMetrics, thresholds=15, max_dist=0.07, nms=True),
        partial(references.boundary, thresholds=15, max_dist=0.07, nms=True),
        realistic_boundary_cases,
    ),
    Row(
        "instance_ap",
        partial(InstanceAPMetric, [PERSON, CAR], **ABSOLUTE_MIN_REGION),
        partial(instance_references.instance_ap, classes=[PERSON, CAR], min_region_size=30),
        instance_ap_cases,
    ),
    Row(
        "instance_ap_plain_ids",
        partial(InstanceAPMetric, min_region_size=20, min_region_resolution=None),
        partial(instance_references.instance_ap, classes=None, min_region_size=20),
        plain_id_cases,
    ),
    Row(
        "instance_segmentation",
        partial(InstanceSegmentationMetrics, [PERSON, CAR], GroupingConfig()),
        partial(
            instance_references.instance_segmentation,
            classes=[PERSON, CAR],
            min_region_size=SCALED_MIN_REGION,
        ),
        instance_segmentation_cases,
        Tolerance(default_abs=1e-6),  # the metric's true offsets are float32
    ),
]

CASES = {row.name: row.cases() for row in ROWS}


def test_every_metric_class_has_a_row():
    covered = {type(row.factory()) for row in ROWS}
    assert covered == set(all_metric_classes())


def all_metric_classes() -> list[type[Metric]]:
    """Every ``Metric`` subclass the package defines (its metric modules imported)."""
    for module in pkgutil.iter_modules(densetasks.metrics.__path__):
        importlib.import_module(f"densetasks.metrics.{module.name}")
    found, pending = [], list(Metric.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("densetasks."):
            found.append(cls)
    return found


@pytest.mark.parametrize(
    ("row", "case"),
    [(row, case) for row in ROWS for case in CASES[row.name]],
    ids=[f"{row.name}-{case.name}" for row in ROWS for case in CASES[row.name]],
)
def test_metric_equals_its_reference(row: Row, case: Case):
    check_metric(row.factory, row.reference, case, row.tolerance)


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_higher_is_better_points_to_the_perfect_prediction(row: Row):
    results = {}
    for case in CASES[row.name]:
        metric = row.factory()
        for pred, target in case.batches:
            metric.update(pred, target)
        results[case.name] = metric.compute()
    perfect = results.pop("perfect")
    check_directions(row.factory().higher_is_better, perfect, list(results.values()))


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_units_fit_the_perfect_prediction(row: Row):
    """Units name computed metrics only; a perfect prediction scores 100 in every higher-is-
    better percentage and 0 in every error with a unit (m, °, px, 1/m; a histogram median to
    within its bin)."""
    metric = row.factory()
    assert set(metric.units) <= set(metric.higher_is_better)
    assert set(metric.units.values()) <= {"%", "m", "°", "px", "1/m"}
    (perfect,) = [case for case in CASES[row.name] if case.name == "perfect"]
    for pred, target in perfect.batches:
        metric.update(pred, target)
    values = metric.compute()
    for name, unit in metric.units.items():
        if name not in values or math.isnan(values[name]):
            continue
        expected = 100.0 if unit == "%" and metric.higher_is_better[name] else 0.0
        tolerance = max(1e-3, getattr(metric, "bin_width", 0.0))  # a histogram median's bin
        assert values[name] == pytest.approx(expected, abs=tolerance), (name, unit)


# --- the harness fails where it should -------------------------------------------------------


def per_image_miou(pred: torch.Tensor, target: torch.Tensor, *, num_classes: int) -> dict:
    """The mistake the segmentation metric avoids: the mean of per-image mIoUs (torchmetrics
    ``MeanIoU``)."""
    per_image = [
        references.segmentation(p[None], t[None], num_classes=num_classes)
        for p, t in zip(pred, target, strict=True)
    ]
    return {key: np.nanmean([image[key] for image in per_image]) for key in per_image[0]}


class LastBatchOnly(ConfusionMatrixMetric):
    """Overwrites its state with each batch instead of adding to it."""

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.reset()
        super().update(pred, target)


class ResetKeepsCounts(ConfusionMatrixMetric):
    def reset(self) -> None:
        pass


class StatesNotShared(ConfusionMatrixMetric):
    """Hides its state from the all-reduce, as a composite metric that forgets a part."""

    def states(self) -> dict[str, torch.Tensor]:
        return {}


class MissingDirection(ConfusionMatrixMetric):
    higher_is_better: ClassVar[dict[str, bool]] = {"miou": True}


class ClearsIgnoredLabels(ConfusionMatrixMetric):
    """Writes into the caller's label."""

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        target[target == IGNORE_INDEX] = 0
        super().update(pred, target)


class AlignsWholeBatches(DepthMetrics):
    """Fits one scale and shift per batch instead of per image: right for batches of one
    image, wrong as soon as a batch holds two."""

    @staticmethod
    def _aligned(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        joined = [part.reshape(1, -1, part.shape[-1]) for part in (pred, target, valid)]
        return DepthMetrics._aligned(*joined).reshape(pred.shape)


SEMSEG_REFERENCE = partial(references.segmentation, num_classes=CLASSES)


@pytest.mark.parametrize(
    ("factory", "reference", "check"),
    [
        (
            partial(ConfusionMatrixMetric, CLASSES),
            partial(per_image_miou, num_classes=CLASSES),
            "reference",
        ),
        (partial(LastBatchOnly, CLASSES), SEMSEG_REFERENCE, "reference"),
        (partial(ClearsIgnoredLabels, CLASSES), SEMSEG_REFERENCE, "reference: update"),
        (partial(MissingDirection, CLASSES), SEMSEG_REFERENCE, "keys: higher_is_better"),
        (partial(ResetKeepsCounts, CLASSES), SEMSEG_REFERENCE, "reset"),
        (partial(StatesNotShared, CLASSES), SEMSEG_REFERENCE, "all_reduce"),
    ],
    ids=[
        "per_image_reference",
        "last_batch_only",
        "changes_its_input",
        "missing_direction",
        "reset_keeps_counts",
        "states_not_shared",
    ],
)
def test_the_harness_fails_a_wrong_reference_or_metric(factory, reference, check):
    with pytest.raises(AssertionError, match=f"^{check}"):
        check_metric(factory, reference, CASES["semseg"][0])


def test_the_harness_fails_a_metric_that_depends_on_the_batch_split():
    noisy = CASES["depth_ssi"][0]
    one_image_batches = Case(
        "one_image_batches",
        [(p[i : i + 1], t[i : i + 1]) for p, t in noisy.batches for i in range(len(p))],
    )
    reference = partial(references.depth, align_scale_shift=True, max_depth=8.0)
    options = {"align_scale_shift": True, "max_depth": 8.0}
    check_metric(
        partial(DepthMetrics, **options), reference, one_image_batches, Tolerance(rel=1e-7)
    )
    with pytest.raises(AssertionError, match="^resplit"):
        check_metric(
            partial(AlignsWholeBatches, **options),
            reference,
            one_image_batches,
            Tolerance(rel=1e-7),
        )
