"""Mask AP by the Cityscapes protocol: hand-computed cases (two classes, a cross-class match,
void, a group region, an instance below the minimum size, the script's integration) and the
shape check. The comparison with the official script (``cityscapesscripts``) over batches,
resets and summed states is ``test_reference_harness.py``.
"""

import math

import numpy as np
import pytest
import torch

from densetasks.metrics.instance_ap import (
    IOU_THRESHOLDS,
    InstanceAPMetric,
    InstanceMap,
    average_precision,
)

PERSON, CAR, VOID = 1, 2, 255


def two_instances() -> tuple[torch.Tensor, torch.Tensor]:
    """A person (id 1, top left) and a car (id 2, bottom right), 16 px each, in 10×10."""
    ids = torch.zeros(1, 10, 10, dtype=torch.int64)
    ids[0, :4, :4] = 1
    ids[0, 6:, 6:] = 2
    semantic = torch.zeros_like(ids)
    semantic[ids == 1], semantic[ids == 2] = PERSON, CAR
    return ids, semantic


def metric(**options) -> InstanceAPMetric:
    """Two classes, absolute minimum size (0 unless given)."""
    options = {"min_region_size": 0, "min_region_resolution": None, **options}
    return InstanceAPMetric([PERSON, CAR], **options)


def outcomes(result: InstanceAPMetric, class_index: int, threshold: float) -> list[int]:
    """``[false positives, true positives]`` counted for one class at one threshold."""
    return result.hits[class_index, IOU_THRESHOLDS.index(threshold)].sum(0).tolist()


def test_perfect_prediction_is_100_and_ids_need_not_match():
    ids, semantic = two_instances()
    evaluation = metric()
    evaluation.update(InstanceMap(ids * 5, semantic), InstanceMap(ids, semantic))
    assert set(evaluation.compute().values()) == {100.0}
    plain = InstanceAPMetric()  # no classes: one class, every instance
    plain.update(ids * 5, ids)
    assert set(plain.compute().values()) == {100.0}


def test_cross_class_match_does_not_count():
    ids, semantic = two_instances()
    pred_semantic = semantic.clone()
    pred_semantic[ids == 2] = PERSON  # the car predicted as a person
    evaluation = metric()
    evaluation.update(InstanceMap(ids, pred_semantic), InstanceMap(ids, semantic))
    # Person: two predictions of 16 px (tied), one true → the curve goes from (0, 1) to
    # (recall 1, precision 1/2): area 3/4. Car: ground truth, no prediction → 0.
    result = evaluation.compute()
    assert result["ap"] == result["ap50"] == result["ap75"] == pytest.approx(37.5)
    assert result["ap_agnostic"] == result["ap50_agnostic"] == 100.0


def test_prediction_class_is_the_majority_under_it():
    ids, semantic = two_instances()
    pred_semantic = semantic.clone()
    pred_semantic[0, :1, :4] = CAR  # 4 of the person's 16 pixels predicted as car
    evaluation = metric()
    evaluation.update(InstanceMap(ids, pred_semantic), InstanceMap(ids, semantic))
    assert evaluation.compute()["ap"] == 100.0


def test_prediction_mostly_on_void_is_ignored_up_to_its_void_fraction():
    ids, semantic = two_instances()
    semantic[0, 6:, 6:], ids[0, 6:, 6:] = VOID, 0  # the car becomes void
    pred = ids.clone()
    pred[0, 6:, 6:] = 3  # 16 px on void ...
    pred[0, 5, 2:] = 3  # ... and 8 on background: 2/3 on void, 24 px, ranked first
    pred_semantic = torch.where(pred > 0, PERSON, 0)
    evaluation = metric()
    evaluation.update(InstanceMap(pred, pred_semantic), InstanceMap(ids, semantic))
    # Ignored while 2/3 > t (t ≤ 0.65): AP 1. A false positive from t = 0.7: ranked first,
    # it puts (0, 0) before (1, 1/2) → area 1/4.
    per_threshold = [1.0 if threshold < 2 / 3 else 0.25 for threshold in IOU_THRESHOLDS]
    result = evaluation.compute()
    assert result["ap"] == pytest.approx(100 * np.mean(per_threshold))
    assert (result["ap50"], result["ap75"]) == (100.0, pytest.approx(25.0))
    assert outcomes(evaluation, 0, 0.65) == [0, 1] and outcomes(evaluation, 0, 0.7) == [1, 1]


def test_void_stays_in_the_predicted_area_of_the_iou():
    ids, semantic = two_instances()
    semantic[0, 4:6, :4] = VOID  # 8 void pixels below the person
    pred = ids.clone()
    pred[0, 4:6, :4] = 1  # the person plus the void: IoU 16 / 24
    evaluation = metric()
    evaluation.update(InstanceMap(pred, semantic.clamp(max=CAR)), InstanceMap(ids, semantic))
    # A match while 2/3 > t; above, a miss and a false positive (1/3 on void ≤ t): the
    # person's AP is 1 for t ≤ 0.65, 0 above; the car's is 1 throughout.
    person = [1.0 if threshold < 2 / 3 else 0.0 for threshold in IOU_THRESHOLDS]
    assert evaluation.compute()["ap"] == pytest.approx(100 * (np.mean(person) + 1) / 2)


def test_group_region_of_the_predicted_class_is_ignored():
    ids, semantic = two_instances()
    semantic[0, 6:, :4] = CAR  # a car group: car pixels without an instance id
    pred = ids.clone()
    pred[0, 6:, :4] = 3
    for pred_class, ignored in ((CAR, True), (PERSON, False)):
        pred_semantic = torch.where(pred == 3, pred_class, semantic)
        evaluation = metric()
        evaluation.update(InstanceMap(pred, pred_semantic), InstanceMap(ids, semantic))
        class_index = [PERSON, CAR].index(pred_class)
        assert outcomes(evaluation, class_index, 0.5)[0] == (0 if ignored else 1)
        assert evaluation.hits_agnostic[0].sum(0).tolist() == [0, 2]  # any group, agnostic


def test_ground_truth_below_the_minimum_size_is_not_evaluated():
    ids, semantic = two_instances()
    ids[0, 8:, :2], semantic[0, 8:, :2] = 3, PERSON  # a 4-px person
    pred = ids.clone()
    pred[pred == 2] = 0  # the car is missed ...
    pred[0, 8:, :3] = 3  # ... the small person predicted with 2 px more (IoU 2/3)
    pred_semantic = torch.where(pred > 0, semantic, 0).clamp(max=CAR)
    pred_semantic[0, 8:, 2] = PERSON
    small = metric(min_region_size=5)
    small.update(InstanceMap(pred, pred_semantic), InstanceMap(ids, semantic))
    assert small.instances.tolist() == [1, 1]
    assert outcomes(small, 0, 0.5) == [0, 1]  # 4 of its 6 px on a small instance: ignored
    assert outcomes(small, 0, 0.7) == [1, 1]  # 2/3 ≤ t: counted
    every = metric()
    every.update(InstanceMap(pred, pred_semantic), InstanceMap(ids, semantic))
    assert every.instances.tolist() == [2, 1] and outcomes(every, 0, 0.5) == [0, 2]


def test_minimum_size_scales_with_the_image_or_is_absolute():
    cityscapes = InstanceAPMetric()
    assert cityscapes.min_region_pixels((1024, 2048)) == 100.0
    assert cityscapes.min_region_pixels((128, 256)) == pytest.approx(100 / 64)
    absolute = InstanceAPMetric(min_region_size=50, min_region_resolution=None)
    assert absolute.min_region_pixels((128, 256)) == 50.0


def test_average_precision_integrates_like_the_cityscapes_script():
    # Score levels, highest first: a false positive, two true positives, a false positive;
    # 4 ground-truth instances. Points: (0, 1), (0, 0), (1/2, 2/3), (1/2, 1/2).
    hits = torch.tensor([[1, 0], [0, 2], [1, 0]])
    assert average_precision(hits, 4) == pytest.approx(0.5 * 0.5 * (0 + 2 / 3))
    assert average_precision(torch.zeros(3, 2, dtype=torch.int64), 4) == 0.0
    assert math.isnan(average_precision(hits, 0))


def test_without_ground_truth_classes_only_the_agnostic_numbers_are_measured():
    ids, semantic = two_instances()
    evaluation = metric()
    evaluation.update(InstanceMap(ids, semantic), ids)
    result = evaluation.compute()
    assert math.isnan(result["ap"]) and result["ap_agnostic"] == 100.0
    with pytest.raises(ValueError, match="InstanceMap"):
        evaluation.update(ids, ids)


def test_shape_check():
    ids, _ = two_instances()
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        metric().update(ids[0], ids)
