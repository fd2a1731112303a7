"""Offset error against a NumPy reference (own centroid computation, Euclidean distance)."""

import math

import numpy as np
import pytest
import torch

from densetasks.metrics.offsets import OffsetErrorMetric


def reference_offsets(ids: np.ndarray) -> np.ndarray:
    offsets = np.zeros((2, *ids.shape))
    ys, xs = np.mgrid[: ids.shape[0], : ids.shape[1]]
    for instance_id in np.unique(ids[ids > 0]):
        pixels = ids == instance_id
        offsets[0][pixels] = xs[pixels].mean() - xs[pixels]
        offsets[1][pixels] = ys[pixels].mean() - ys[pixels]
    return offsets


def test_matches_numpy_reference_over_several_batches():
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 6, (4, 20, 24), generator=generator)
    pred = 3 * torch.randn(4, 2, 20, 24, generator=generator)
    metric = OffsetErrorMetric()
    metric.update(pred[:1], ids[:1])
    metric.update(pred[1:], ids[1:])
    errors = []
    for image in range(4):
        truth = reference_offsets(ids[image].numpy())
        distance = np.linalg.norm(pred[image].double().numpy() - truth, axis=0)
        errors.append(distance[ids[image].numpy() > 0])
    expected = np.concatenate(errors).mean()
    assert metric.compute()["offset_error"] == pytest.approx(expected, rel=1e-6)
    assert int(metric.pixels) == int((ids > 0).sum())


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
