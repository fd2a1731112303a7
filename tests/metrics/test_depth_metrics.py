"""Depth metrics by hand and the scale-and-shift alignment; the comparison with a NumPy
reference over batches, resets and summed states is ``test_reference_harness.py``."""

import math

import numpy as np
import pytest
import torch

from densetasks.metrics.depth import DepthMetrics, align_disparity


def test_hand_computed_values():
    metric = DepthMetrics()
    pred = torch.tensor([[[[1.2, 2.0, 5.0]]]])
    target = torch.tensor([[[[1.0, 1.0, 0.0]]]])  # last pixel unlabelled
    metric.update(pred, target)
    result = metric.compute()
    assert result["rmse"] == pytest.approx(math.sqrt((0.04 + 1.0) / 2))
    assert result["mae"] == pytest.approx(0.6)
    assert result["abs_rel"] == pytest.approx(0.6)
    log_rmse = math.sqrt((math.log(1.2) ** 2 + math.log(2.0) ** 2) / 2)
    assert result["log_rmse"] == pytest.approx(log_rmse)
    assert [result[f"delta{i}"] for i in (1, 2, 3)] == pytest.approx([50.0, 50.0, 50.0])


def test_max_depth_leaves_far_labels_out_by_hand():
    # Labels 2, 4, 1e5 (SGM noise) and 80 (kept: the limit is inclusive); predictions 3, 4,
    # 80, 78. RMSE over the kept pixels: sqrt((1 + 0 + 4) / 3); with the far pixel it would
    # be ~5.0e4 m.
    pred = torch.tensor([[[[3.0, 4.0, 80.0, 78.0]]]])
    target = torch.tensor([[[[2.0, 4.0, 1e5, 80.0]]]])
    capped = DepthMetrics(max_depth=80.0, disparity_scale=10.0)
    capped.update(pred, target)
    result = capped.compute()
    assert result["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert result["mae"] == pytest.approx(1.0)
    # disparity 10/d: |10/3 - 5| = 5/3, 0, |10/78 - 10/80| = 1/312
    assert result["disparity_mae"] == pytest.approx((5 / 3 + 1 / 312) / 3)
    assert result["inverse_mae"] == pytest.approx(result["disparity_mae"] / 10)
    uncapped = DepthMetrics()
    uncapped.update(pred, target)
    assert uncapped.compute()["rmse"] > 4e4 and "disparity_mae" not in uncapped.compute()


def test_align_disparity_matches_numpy_least_squares():
    generator = torch.Generator().manual_seed(2)
    pred = torch.rand(2, 4, 5, generator=generator, dtype=torch.float64)
    target = torch.rand(2, 4, 5, generator=generator, dtype=torch.float64)
    valid = torch.rand(2, 4, 5, generator=generator) < 0.7
    aligned = align_disparity(pred, target, valid)
    for b in range(2):
        p, t = pred[b][valid[b]].numpy(), target[b][valid[b]].numpy()
        (scale, shift), *_ = np.linalg.lstsq(np.stack([p, np.ones_like(p)], 1), t, rcond=None)
        assert aligned[b].numpy() == pytest.approx(scale * pred[b].numpy() + shift)


def test_constant_prediction_aligns_to_mean():
    pred = torch.ones(1, 2, 2)
    target = torch.tensor([[[1.0, 2.0], [3.0, 6.0]]])
    aligned = align_disparity(pred, target, torch.ones(1, 2, 2, dtype=torch.bool))
    assert torch.allclose(aligned, torch.full((1, 2, 2), 3.0))


def test_scale_shift_alignment_recovers_affine_disparity():
    target = 1.0 + 9.0 * torch.rand(2, 1, 6, 6)
    target[0, 0, 0] = 0.0
    disparity = torch.where(target > 0, 1.0 / target.clamp(min=1e-6), 0.0)
    output = 0.5 * disparity + 0.3  # what an ssi head outputs: disparity up to scale/shift
    aligned = DepthMetrics(align_scale_shift=True)
    aligned.update(output, target)
    plain = DepthMetrics()
    plain.update(1.0 / output, target)
    assert aligned.compute()["rmse"] == pytest.approx(0.0, abs=1e-4)
    assert aligned.compute()["delta1"] == 100.0
    assert plain.compute()["rmse"] > 1.0


def test_shape_errors():
    metric = DepthMetrics()
    with pytest.raises(ValueError, match="B, 1, H, W"):
        metric.update(torch.ones(1, 2, 2), torch.ones(1, 2, 2))


def test_alignment_keeps_negative_disparity_outputs():
    """An ssi output that is an exact (negative) scale and shift of the true disparity,
    o = −2/d + 0.5 for d = 1, 2, 4, 8, crosses zero; aligned before inverting, it is perfect
    (clamping it to a positive disparity first gave δ1 50 %, abs_rel 0.357)."""
    depth = torch.tensor([1.0, 2.0, 4.0, 8.0]).view(1, 1, 2, 2)
    output = -2.0 / depth + 0.5
    assert (output <= 0).any() and (output > 0).any()
    metrics = DepthMetrics(align_scale_shift=True)
    metrics.update(output, depth)
    result = metrics.compute()
    assert result["delta1"] == 100.0
    assert result["abs_rel"] == pytest.approx(0.0, abs=1e-9)
