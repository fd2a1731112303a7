"""Normal angle metrics by hand; the comparison with a NumPy reference over batches, resets
and summed states is ``test_reference_harness.py``."""

import math

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


def test_median_of_even_count_averages_the_middle_values():
    metric = NormalsMetrics()
    target = column((0, 0, 1), (0, 0, 1))
    metric.update(column((0, 0, 1), (1, 0, 0)), target)  # 0° and 90°
    assert metric.compute()["median"] == pytest.approx(45.0, abs=0.01)


def test_shape_errors():
    metric = NormalsMetrics()
    with pytest.raises(ValueError, match="B, 3, H, W"):
        metric.update(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="bin_width"):
        NormalsMetrics(bin_width=0)
