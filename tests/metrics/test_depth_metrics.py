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


def numpy_reference(preds, targets, max_depth=np.inf, disparity_scale=None):
    pred = np.concatenate([p.numpy().ravel() for p in preds]).astype(np.float64)
    target = np.concatenate([t.numpy().ravel() for t in targets]).astype(np.float64)
    keep = (target > 0) & (target <= max_depth)
    pred, target = pred[keep], target[keep]
    ratio = np.maximum(pred / target, target / pred)
    inverse_error = 1 / pred - 1 / target
    reference = {
        "rmse": np.sqrt(np.mean((pred - target) ** 2)),
        "mae": np.mean(np.abs(pred - target)),
        "abs_rel": np.mean(np.abs(pred - target) / target),
        "log_rmse": np.sqrt(np.mean((np.log(pred) - np.log(target)) ** 2)),
        "delta1": 100 * np.mean(ratio < 1.25),
        "delta2": 100 * np.mean(ratio < 1.25**2),
        "delta3": 100 * np.mean(ratio < 1.25**3),
        "inverse_mae": np.mean(np.abs(inverse_error)),
        "inverse_rmse": np.sqrt(np.mean(inverse_error**2)),
    }
    if disparity_scale is not None:
        disparity_error = disparity_scale / pred - disparity_scale / target
        reference["disparity_mae"] = np.mean(np.abs(disparity_error))
        reference["disparity_rmse"] = np.sqrt(np.mean(disparity_error**2))
    return reference


def random_depths(seed):
    generator = torch.Generator().manual_seed(seed)
    preds = [0.5 + 10 * torch.rand(2, 1, 7, 9, generator=generator) for _ in range(3)]
    targets = [0.5 + 10 * torch.rand(2, 1, 7, 9, generator=generator) for _ in range(3)]
    for target in targets:
        target[torch.rand(target.shape, generator=generator) < 0.3] = 0.0
        target[torch.rand(target.shape, generator=generator) < 0.1] = 1e5  # far SGM noise
    return preds, targets


@pytest.mark.parametrize(
    ("max_depth", "disparity_scale"), [(None, None), (8.0, None), (None, 59.2), (8.0, 473.6)]
)
def test_accumulated_batches_match_numpy_and_one_big_batch(max_depth, disparity_scale):
    preds, targets = random_depths(0)
    options = {"max_depth": max_depth, "disparity_scale": disparity_scale}
    batched, whole = DepthMetrics(**options), DepthMetrics(**options)
    for pred, target in zip(preds, targets, strict=True):
        batched.update(pred, target)
    whole.update(torch.cat(preds), torch.cat(targets))
    reference = numpy_reference(preds, targets, max_depth or np.inf, disparity_scale)
    assert set(batched.compute()) == set(reference) == set(batched.names)
    for name, value in batched.compute().items():
        assert value == pytest.approx(reference[name], rel=1e-9), name
        assert whole.compute()[name] == pytest.approx(value, rel=1e-12), name
    assert set(DepthMetrics.higher_is_better) >= set(batched.names)
    assert not DepthMetrics.higher_is_better["rmse"] and DepthMetrics.higher_is_better["delta1"]
    assert not DepthMetrics.higher_is_better["disparity_mae"]


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


def test_empty_reset_and_shape_errors():
    metric = DepthMetrics()
    assert all(math.isnan(v) for v in metric.compute().values())
    metric.update(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    assert all(math.isnan(v) for v in metric.compute().values())
    metric.update(torch.ones(1, 1, 2, 2), 2 * torch.ones(1, 1, 2, 2))
    metric.reset()
    assert int(metric.count) == 0
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
