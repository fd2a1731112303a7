import math

import numpy as np
import pytest
import torch

from densetasks.metrics.normals import NormalsMetrics


def column(*vectors):
    return torch.tensor(vectors, dtype=torch.float32).T[None, :, :, None]


def test_hand_computed_angles():
    metric = NormalsMetrics()
    target = column((0, 0, 1), (0, 0, 1), (0, 0, 1), (0, 0, 0))
    pred = column((0, 0, 1), (1, 0, 1), (1, 0, 0), (1, 0, 0))  # 0°, 45°, 90°, unlabelled
    metric.update(pred, target)
    result = metric.compute()
    assert result["mean"] == pytest.approx(45.0)
    assert result["rmse"] == pytest.approx(math.sqrt((45.0**2 + 90.0**2) / 3))
    assert result["median"] == pytest.approx(45.0, abs=metric.bin_width / 2 + 1e-9)
    for name in ("within_11_25", "within_22_5", "within_30"):
        assert result[name] == pytest.approx(100 / 3)


def test_zero_prediction_counts_as_ninety_degrees():
    metric = NormalsMetrics()
    metric.update(column((0, 0, 0)), column((0, 0, 1)))
    assert metric.compute()["mean"] == pytest.approx(90.0)


def numpy_angles(preds, targets):
    pred = np.concatenate([p.numpy().transpose(0, 2, 3, 1).reshape(-1, 3) for p in preds])
    target = np.concatenate([t.numpy().transpose(0, 2, 3, 1).reshape(-1, 3) for t in targets])
    keep = np.abs(target).sum(1) > 0
    pred, target = pred[keep].astype(np.float64), target[keep].astype(np.float64)
    cosine = (pred * target).sum(1) / np.linalg.norm(pred, axis=1) / np.linalg.norm(target, axis=1)
    return np.degrees(np.arccos(np.clip(cosine, -1, 1)))


@pytest.mark.parametrize("bin_width", [0.01, 0.5])
def test_accumulated_batches_match_numpy_and_one_big_batch(bin_width):
    generator = torch.Generator().manual_seed(0)
    preds = [torch.randn(2, 3, 6, 7, generator=generator) for _ in range(3)]
    targets = [torch.randn(2, 3, 6, 7, generator=generator) for _ in range(3)]
    for target in targets:
        target[:, :, :2] = 0.0
    batched, whole = NormalsMetrics(bin_width), NormalsMetrics(bin_width)
    for pred, target in zip(preds, targets, strict=True):
        batched.update(pred, target)
    whole.update(torch.cat(preds), torch.cat(targets))
    angles = numpy_angles(preds, targets)
    result = batched.compute()
    assert result == whole.compute()
    assert result["mean"] == pytest.approx(angles.mean(), rel=1e-9)
    assert result["rmse"] == pytest.approx(np.sqrt((angles**2).mean()), rel=1e-9)
    assert result["median"] == pytest.approx(np.median(angles), abs=bin_width / 2 + 1e-9)
    for name, limit in (("within_11_25", 11.25), ("within_22_5", 22.5), ("within_30", 30.0)):
        assert result[name] == pytest.approx(100 * np.mean(angles < limit))


def test_median_of_even_count_averages_the_middle_values():
    metric = NormalsMetrics()
    target = column((0, 0, 1), (0, 0, 1))
    metric.update(column((0, 0, 1), (1, 0, 0)), target)  # 0° and 90°
    assert metric.compute()["median"] == pytest.approx(45.0, abs=0.01)


def test_empty_reset_and_shape_errors():
    metric = NormalsMetrics()
    assert all(math.isnan(v) for v in metric.compute().values())
    metric.update(column((0, 0, 1)), column((0, 0, 1)))
    metric.reset()
    assert int(metric.count) == 0 and int(metric.histogram.sum()) == 0
    with pytest.raises(ValueError, match="B, 3, H, W"):
        metric.update(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="bin_width"):
        NormalsMetrics(bin_width=0)
