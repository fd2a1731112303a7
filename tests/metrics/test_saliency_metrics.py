"""Saliency metrics, both protocols, by hand; the comparison with NumPy references of both
protocols over batches, resets and summed states is ``test_reference_harness.py``."""

import pytest
import torch

from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import ConfigError
from densetasks.metrics.saliency import SaliencyMetrics

# Image A: p [0.95, 0.6, 0.1, ·], labels [1, 0, 0, ignored]; image B: p [0.87, 0.1, ·, ·],
# labels [1, 1, ignored, ignored]. Thresholds 0.2, 0.25, ..., 0.9.
HAND_PROB = torch.tensor([[[0.95, 0.6, 0.1, 0.3]], [[0.87, 0.1, 0.5, 0.5]]])
HAND_LABEL = torch.tensor(
    [[[1, 0, 0, IGNORE_INDEX]], [[1, 1, IGNORE_INDEX, IGNORE_INDEX]]], dtype=torch.uint8
)


def test_hand_computed_per_image():
    # 0.6 < t < 0.87: A P 1 R 1 IoU 1; B P 1 R 1/2 IoU 1/2 -> mean P 1, R 3/4, IoU 3/4,
    # F₁ = 2 · 3/4 / (7/4) = 6/7. t ≤ 0.55: A P 1/2 R 1, B P 1 R 1/2 -> F₁ 3/4, IoU 1/2;
    # t = 0.9: A P 1 R 1, B P 0 R 0 -> F₁ 1/2, IoU 1/2.
    metric = SaliencyMetrics("per_image_f1")
    metric.update(HAND_PROB, HAND_LABEL)
    assert metric.compute() == pytest.approx({"maxF": 600 / 7, "maxIoU": 75.0})
    assert int(metric.images) == 2


def test_hand_computed_pooled():
    # 0.6 < t ≤ 0.85: TP 2, FP 0, FN 1 -> P 1, R 2/3, F = 1.3 · 2/3 / (0.3 + 2/3) = 26/29,
    # IoU 2/3 (the best of both).
    metric = SaliencyMetrics("pooled_beta2_0.3")
    metric.update(HAND_PROB, HAND_LABEL)
    assert metric.compute() == pytest.approx({"maxF": 2600 / 29, "maxIoU": 200 / 3})
    index = int(torch.argmin((metric.thresholds - 0.7).abs()))
    assert (metric.tp[index].item(), metric.fp[index].item(), metric.fn[index].item()) == (2, 0, 1)
    metric.reset()
    assert metric.compute() == {"maxF": 0.0, "maxIoU": 0.0}


def test_an_eight_bit_map_on_a_threshold_is_salient_when_pooled():
    # 153 / 255 == 0.6, the 9th threshold: salient (p ≥ t), 150 / 255 not -> P = R = IoU = 1.
    # With torch.linspace's 0.6000000000000001 the best was t = 0.55: P 1/2, R 1, F 56.5.
    prob = torch.tensor([[[153 / 255, 150 / 255]]], dtype=torch.float64)
    metric = SaliencyMetrics("pooled_beta2_0.3")
    metric.update(prob, torch.tensor([[[1, 0]]], dtype=torch.uint8))
    assert metric.compute() == {"maxF": 100.0, "maxIoU": 100.0}


def test_per_image_empty_images():
    # No salient pixel and no prediction: P = R = 0 and IoU 1 (ASTMT ``jaccard``); an image
    # with no labelled pixel is not counted at all.
    prob = torch.tensor([[[0.1, 0.1]], [[0.9, 0.9]]])
    label = torch.tensor([[[0, 0]], [[IGNORE_INDEX, IGNORE_INDEX]]], dtype=torch.uint8)
    metric = SaliencyMetrics("per_image_f1")
    assert metric.compute() == {"maxF": 0.0, "maxIoU": 0.0}
    metric.update(prob, label)
    assert metric.compute() == pytest.approx({"maxF": 0.0, "maxIoU": 100.0})
    assert int(metric.images) == 1


def test_protocol_threshold_direction_and_errors():
    # p equal to a threshold is salient when pooled (p ≥ t), not per image (p > t).
    prob = torch.full((1, 1, 2), 0.9, dtype=torch.float64)
    label = torch.tensor([[[1, 1]]], dtype=torch.uint8)
    assert SaliencyMetrics().protocol == "per_image_f1"
    pooled, per_image = SaliencyMetrics("pooled_beta2_0.3"), SaliencyMetrics("per_image_f1")
    for metric in (pooled, per_image):
        metric.update(prob, label)
    assert pooled.tp[-1].item() == 2 and per_image.iou[-1].item() == 0.0
    with pytest.raises(ConfigError, match="protocol"):
        SaliencyMetrics("pooled")
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        SaliencyMetrics().update(prob, label[0])
