"""Mask AP: hand-computed cases and an independent NumPy COCO-style reference."""

import math

import numpy as np
import pytest
import torch

from densetasks.metrics.instance_ap import IOU_THRESHOLDS, InstanceAPMetric


def two_instances() -> torch.Tensor:
    ids = torch.zeros(1, 8, 8, dtype=torch.int64)
    ids[0, :4, :4] = 1
    ids[0, 4:, 4:] = 2
    return ids


def reference_ap(preds: list[np.ndarray], truths: list[np.ndarray], threshold: float) -> float:
    """COCO AP at one IoU threshold; score = pixel count, equal scores form one PR point."""
    detections, instances = [], 0
    for pred, truth in zip(preds, truths, strict=True):
        true_masks = [truth == i for i in np.unique(truth) if i > 0]
        instances += len(true_masks)
        pred_masks = [pred == i for i in np.unique(pred) if i > 0]
        pred_masks.sort(key=lambda mask: -mask.sum())
        taken = [False] * len(true_masks)
        for mask in pred_masks:
            best, best_iou = None, threshold
            for index, true_mask in enumerate(true_masks):
                iou = (mask & true_mask).sum() / (mask | true_mask).sum()
                if not taken[index] and iou >= best_iou:
                    best, best_iou = index, iou
            if best is not None:
                taken[best] = True
            detections.append((mask.sum(), best is not None))
    detections.sort(key=lambda item: -item[0])
    scores = np.array([score for score, _ in detections])
    hits = np.array([hit for _, hit in detections], dtype=float)
    last_of_score = np.append(scores[1:] != scores[:-1], True)
    recall = np.cumsum(hits)[last_of_score] / instances
    precision = (np.cumsum(hits) / np.arange(1, len(hits) + 1))[last_of_score]
    for index in range(len(precision) - 2, -1, -1):
        precision[index] = max(precision[index], precision[index + 1])
    values = []
    for point in np.linspace(0, 1, 101):
        reached = np.nonzero(recall >= point)[0]
        values.append(precision[reached[0]] if len(reached) else 0.0)
    return float(np.mean(values))


def test_perfect_prediction_is_one_and_ids_need_not_match():
    truth = two_instances()
    metric = InstanceAPMetric()
    metric.update(truth * 5, truth)
    assert metric.compute() == {"ap": 100.0, "ap50": 100.0, "ap75": 100.0}


def test_one_missed_instance_of_two_caps_recall_at_half():
    truth = two_instances()
    pred = truth.clone()
    pred[pred == 2] = 0
    metric = InstanceAPMetric()
    metric.update(pred, truth)
    # Precision 1 at the 51 recall points 0, 0.01, ..., 0.5 and 0 at the 50 above.
    assert metric.compute()["ap50"] == pytest.approx(100 * 51 / 101)
    assert metric.compute()["ap"] == pytest.approx(100 * 51 / 101)


def test_split_instance_is_a_false_positive_or_a_miss_by_threshold():
    truth = two_instances()
    pred = truth.clone()
    pred[0, :3, :4] = 3  # instance 1 split: 12 pixels (IoU 0.75) and 4 pixels (IoU 0.25)
    metric = InstanceAPMetric()
    metric.update(pred, truth)
    # Order by size: instance 2 (16 px, TP), piece 3 (12 px, TP up to IoU 0.75), piece 1 (FP).
    # Up to IoU 0.75: recall 1 at precision 1 → AP 1. Above: recall 0.5 with precision 1,
    # the 12-pixel piece and the 4-pixel one are false positives → 51/101.
    expected = [1.0 if threshold <= 0.75 else 51 / 101 for threshold in IOU_THRESHOLDS]
    result = metric.compute()
    assert result["ap50"] == pytest.approx(100.0)
    assert result["ap75"] == pytest.approx(100.0)
    assert result["ap"] == pytest.approx(100 * np.mean(expected))


def test_false_positive_ranked_first_lowers_precision():
    truth = two_instances()
    pred = truth.clone()
    pred[0, 4:, :4] = 9  # on background
    pred[0, 4, 0] = 0  # 15 px: ranked after both true positives (16 px each)
    metric = InstanceAPMetric()
    metric.update(pred, truth)
    assert metric.compute()["ap50"] == pytest.approx(100.0)  # the FP comes after full recall
    pred[0, 4, 0] = 9
    pred[0, :2, 4:] = 9  # 24 px: ranked first → precision 0, then 1/2, then 2/3 at recall 1
    metric.reset()
    metric.update(pred, truth)
    assert metric.compute()["ap50"] == pytest.approx(100 * 2 / 3)


@pytest.mark.parametrize("seed", range(4))
def test_matches_numpy_reference_on_random_small_cases(seed):
    generator = np.random.default_rng(seed)
    truths = generator.integers(0, 4, size=(3, 6, 7))
    noise = generator.integers(0, 5, (3, 6, 7))
    preds = np.where(generator.random((3, 6, 7)) < 0.75, truths, noise)
    metric = InstanceAPMetric(bins_per_octave=256)  # every pixel count below 42 in its own bin
    metric.update(torch.from_numpy(preds[:2]), torch.from_numpy(truths[:2]))
    metric.update(torch.from_numpy(preds[2:]), torch.from_numpy(truths[2:]))
    expected = [reference_ap(list(preds), list(truths), t) for t in IOU_THRESHOLDS]
    result = metric.compute()
    assert result["ap50"] == pytest.approx(100 * expected[0])
    assert result["ap75"] == pytest.approx(100 * expected[5])
    assert result["ap"] == pytest.approx(100 * np.mean(expected))
    assert int(metric.instances) == sum(len(np.unique(t[t > 0])) for t in truths)


def test_states_add_up_and_empty_set_is_nan():
    truth = two_instances()
    pred = truth.clone()
    pred[pred == 2] = 0
    whole, first, second = InstanceAPMetric(), InstanceAPMetric(), InstanceAPMetric()
    whole.update(torch.cat([pred, truth]), torch.cat([truth, truth]))
    first.update(pred, truth)
    second.update(truth, truth)
    for name, state in whole.states().items():
        assert torch.equal(state, first.states()[name] + second.states()[name])
    whole.reset()
    assert all(math.isnan(value) for value in whole.compute().values())
    assert whole.higher_is_better == {"ap": True, "ap50": True, "ap75": True}
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        whole.update(pred[0], truth)
