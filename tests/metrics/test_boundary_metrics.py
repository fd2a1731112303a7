"""Boundary metrics: hand-made ODS cases, NMS, and a NumPy reference built on distance
transforms (a different route than the metric's maximum filters) on random inputs."""

import numpy as np
import pytest
import scipy.ndimage
import torch

from densetasks.data.derive import edges_from_segments
from densetasks.data.sample import IGNORE_INDEX
from densetasks.metrics.boundary import (
    BoundaryMetrics,
    average_precision,
    disk_footprint,
    suppress_non_maxima,
)


def line_label(column: int, size: int = 128) -> torch.Tensor:
    label = torch.zeros(1, size, size, dtype=torch.uint8)
    label[0, :, column] = 1
    return label


@pytest.mark.parametrize(("shift", "expected"), [(0, 100.0), (1, 100.0), (3, 0.0)])
def test_ods_of_a_perfect_and_a_shifted_line(shift, expected):
    # 128 x 128: tolerance 0.0075 * 181 = 1.36 px, so 1 px is inside and 3 px outside.
    metric = BoundaryMetrics()
    metric.update(line_label(60 + shift).float(), line_label(60))
    result = metric.compute()
    assert result["odsF"] == pytest.approx(expected)
    assert result["oisF"] == pytest.approx(expected)
    assert result["ap"] == pytest.approx(expected)


def test_ignored_pixels_are_neither_predictions_nor_ground_truth():
    label = line_label(60)
    label[0, :, 100] = IGNORE_INDEX
    pred = line_label(60).float()
    pred[0, :, 100] = 1.0  # a false edge on ignored pixels does not count
    metric = BoundaryMetrics()
    metric.update(pred, label)
    assert metric.compute()["odsF"] == pytest.approx(100.0)
    assert int(metric.gt[0]) == 128 and int(metric.pred[0]) == 128


def test_nms_thins_a_blurred_ridge_to_its_crest():
    prob = torch.zeros(1, 16, 16, dtype=torch.float64)
    prob[0, :, 6], prob[0, :, 7], prob[0, :, 8] = 0.5, 1.0, 0.5
    prob[0, 4, 7] = 0.8  # a weaker stretch of the crest stays
    thin = suppress_non_maxima(prob)
    assert torch.equal(thin[0, :, 7], prob[0, :, 7])
    assert thin[0, :, [6, 8]].abs().sum() == 0
    assert torch.equal(suppress_non_maxima(prob.transpose(1, 2))[0, 7], prob[0, :, 7])
    diagonal = (
        torch.eye(16, dtype=torch.float64)[None]
        + 0.5
        * (
            torch.diag(torch.ones(15, dtype=torch.float64), 1)
            + torch.diag(torch.ones(15, dtype=torch.float64), -1)
        )[None]
    )
    assert torch.equal(suppress_non_maxima(diagonal), torch.eye(16, dtype=torch.float64)[None])


def test_disk_footprint():
    assert disk_footprint(0.5).tolist() == [[True]]
    assert disk_footprint(1.36).astype(int).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert disk_footprint(1.5).all()


def test_average_precision_of_a_step_curve():
    precision = np.array([0.5, 0.8, 1.0])
    recall = np.array([1.0, 0.6, 0.2])  # thresholds ascending
    assert average_precision(precision, recall) == pytest.approx(0.4 * 0.5 + 0.4 * 0.8 + 0.2)


def reference_counts(prob, label, thresholds, radius):
    """Per image and threshold: matched predictions, predictions, recalled GT, GT."""
    counts = np.zeros((prob.shape[0], len(thresholds), 4))
    for image in range(prob.shape[0]):
        valid = label[image] != IGNORE_INDEX
        gt = label[image] == 1
        gt_distance = scipy.ndimage.distance_transform_edt(~gt) if gt.any() else None
        for index, threshold in enumerate(thresholds):
            pred = (prob[image] >= threshold) & valid
            matched_pred = 0 if gt_distance is None else (pred & (gt_distance <= radius)).sum()
            recalled = 0
            if pred.any():
                recalled = (gt & (scipy.ndimage.distance_transform_edt(~pred) <= radius)).sum()
            counts[image, index] = matched_pred, pred.sum(), recalled, gt.sum()
    return counts


def reference_f(counts):
    precision = counts[..., 0] / np.maximum(counts[..., 1], 1e-300)
    recall = counts[..., 2] / np.maximum(counts[..., 3], 1e-300)
    return 2 * precision * recall / np.maximum(precision + recall, 1e-300), precision, recall


def test_matches_a_distance_transform_reference_over_several_batches():
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(3):
        label = (torch.rand(2, 48, 64, generator=generator) > 0.9).to(torch.uint8)
        label[torch.rand(2, 48, 64, generator=generator) > 0.95] = IGNORE_INDEX
        batches.append((torch.rand(2, 48, 64, generator=generator), label))
    metric = BoundaryMetrics(thresholds=19, max_dist=0.03, nms=False)  # radius 2.4 px
    for prob, label in batches:
        metric.update(prob, label)
    thresholds = np.linspace(0, 1, 21)[1:-1]
    counts = np.concatenate(
        [
            reference_counts(p.double().numpy(), y.numpy(), thresholds, 0.03 * 80.0)
            for p, y in batches
        ]
    )
    assert metric.matched_pred.tolist() == counts[..., 0].sum(0).tolist()
    assert metric.pred.tolist() == counts[..., 1].sum(0).tolist()
    assert metric.matched_gt.tolist() == counts[..., 2].sum(0).tolist()
    assert metric.gt.tolist() == counts[..., 3].sum(0).tolist()
    per_image_f = reference_f(counts)[0]
    best = per_image_f.argmax(1)
    ois = counts[np.arange(len(best)), best].sum(0)
    ods_f, precision, recall = reference_f(counts.sum(0))
    result = metric.compute()
    assert result["odsF"] == pytest.approx(100 * ods_f.max())
    assert result["oisF"] == pytest.approx(100 * reference_f(ois)[0])
    expected_ap = sum(
        (recall[k] - (recall[k + 1] if k + 1 < len(recall) else 0.0)) * precision[k]
        for k in range(len(recall))
    )
    assert result["ap"] == pytest.approx(100 * expected_ap)

    one_pass = BoundaryMetrics(thresholds=19, max_dist=0.03, nms=False)
    one_pass.update(torch.cat([p for p, _ in batches]), torch.cat([y for _, y in batches]))
    assert one_pass.compute() == pytest.approx(result)


def test_reset_and_shape_check():
    metric = BoundaryMetrics()
    metric.update(line_label(3, 32).float(), line_label(3, 32))
    metric.reset()
    assert int(metric.gt.sum()) == 0 and int(metric.ois.sum()) == 0
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        metric.update(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.uint8))


def test_blurred_prediction_of_derived_edges_scores_high_after_nms():
    segments = torch.zeros(128, 128, dtype=torch.long)
    segments[30:90, 40:100] = 1
    segments[60:120, 10:50] = 2
    label = edges_from_segments(segments)[None]
    blurred = torch.nn.functional.avg_pool2d(label[None].float(), 5, 1, 2)[0]
    blurred = blurred / blurred.max()
    thinned, raw = BoundaryMetrics(nms=True), BoundaryMetrics(nms=False)
    thinned.update(blurred, label)
    raw.update(blurred, label)
    assert thinned.compute()["odsF"] > 95.0
    assert int(thinned.pred[0]) < int(raw.pred[0])  # NMS removed the blur's flanks
