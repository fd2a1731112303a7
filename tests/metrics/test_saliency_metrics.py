"""Saliency metrics against a direct NumPy computation over the whole set."""

import numpy as np
import pytest
import torch

from densetasks.data.sample import IGNORE_INDEX
from densetasks.metrics.saliency import SaliencyMetrics


def direct_max_f_and_iou(prob: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    valid = label != IGNORE_INDEX
    best_f = best_iou = 0.0
    for threshold in np.linspace(0.2, 0.9, 15):
        predicted = (prob >= threshold) & valid
        salient = (label == 1) & valid
        tp = (predicted & salient).sum()
        fp = (predicted & ~salient).sum()
        fn = (~predicted & salient).sum()
        precision = tp / max(tp + fp, 1)
        recall = tp / max(tp + fn, 1)
        if precision + recall > 0:
            best_f = max(best_f, 1.3 * precision * recall / (0.3 * precision + recall))
        best_iou = max(best_iou, tp / max(tp + fp + fn, 1))
    return 100 * best_f, 100 * best_iou


def test_matches_direct_computation_and_accumulates_over_batches():
    generator = torch.Generator().manual_seed(1)
    label = (torch.rand(6, 32, 32, generator=generator) > 0.6).to(torch.uint8)
    label[torch.rand(6, 32, 32, generator=generator) > 0.9] = IGNORE_INDEX
    prob = (0.5 * torch.rand(6, 32, 32, generator=generator) + 0.4 * (label == 1)).float()
    metric = SaliencyMetrics()
    for start in range(0, 6, 2):
        metric.update(prob[start : start + 2], label[start : start + 2])
    max_f, max_iou = direct_max_f_and_iou(prob.double().numpy(), label.numpy())
    assert metric.compute() == pytest.approx({"maxF": max_f, "maxIoU": max_iou})
    one_pass = SaliencyMetrics()
    one_pass.update(prob, label)
    assert one_pass.compute() == pytest.approx(metric.compute())


def test_hand_made_case():
    # Threshold 0.5: TP 1, FP 1, FN 0 -> P 0.5, R 1, F = 1.3*0.5 / (0.15 + 1), IoU 0.5.
    # Threshold > 0.7: TP 1, FP 0, FN 0 -> F 1 and IoU 1 (the maximum).
    prob = torch.tensor([[[0.95, 0.6, 0.1, 0.3]]])
    label = torch.tensor([[[1, 0, 0, IGNORE_INDEX]]], dtype=torch.uint8)
    metric = SaliencyMetrics()
    metric.update(prob, label)
    assert metric.compute() == pytest.approx({"maxF": 100.0, "maxIoU": 100.0})
    index = int(torch.argmin((metric.thresholds - 0.5).abs()))
    assert metric.thresholds[index].item() == pytest.approx(0.5)
    assert (metric.tp[index].item(), metric.fp[index].item(), metric.fn[index].item()) == (1, 1, 0)
    metric.reset()
    assert metric.compute() == {"maxF": 0.0, "maxIoU": 0.0}
