"""Offset error by hand; the comparison with a NumPy reference (own centroid computation,
Euclidean distance) over batches, resets and summed states is ``test_reference_harness.py``."""

import math

import pytest
import torch

from densetasks.metrics.offsets import OffsetErrorMetric


def test_hand_made_case_and_empty_set():
    ids = torch.tensor([[[1, 1]]])  # centroid x = 0.5: offsets +0.5 and -0.5, dy 0
    pred = torch.tensor([[[[3.5, -0.5]], [[4.0, 0.0]]]])  # errors 5 and 0
    metric = OffsetErrorMetric()
    metric.update(pred, ids)
    assert metric.compute()["offset_error"] == pytest.approx(2.5)
    metric.reset()
    assert math.isnan(metric.compute()["offset_error"])
    assert metric.higher_is_better == {"offset_error": False}
    with pytest.raises(ValueError, match=r"\[B, 2, H, W\]"):
        metric.update(torch.zeros(1, 3, 1, 2), ids)
