"""Depth metrics pooled over every valid pixel of the set (RMSE, AbsRel, δ thresholds, ...).

The standard monocular-depth set (Eigen et al. 2014; Lopes et al., WACV 2023, report RMSE in metres,
Hickson et al., WACV 2022, the δ accuracies). All states are sums over pixels, so the numbers are
pixel-pooled over the whole evaluation set, not means of per-image values.
"""

from typing import ClassVar

import torch

from densetasks.metrics.base import Metric

DELTA_BASE = 1.25
"""δ_i counts pixels with ``max(p / t, t / p) < 1.25^i``, i = 1, 2, 3."""

MIN_DISPARITY = 1e-6


def align_disparity(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per image, the least-squares ``s·pred + t`` closest to ``target`` on ``valid`` pixels.

    ``pred``, ``target``: float ``[B, H, W]`` (disparities), ``valid`` bool ``[B, H, W]``.
    Least squares of ``min Σ (s·p + t − d)²`` per image (MiDaS, Ranftl et al. 2020, eq. 4)
    in its centred form ``s = cov(p, d) / var(p)``, ``t = mean d − s · mean p``, which stays
    accurate in float32; differentiable. When the prediction is constant on the valid
    pixels (variance below 1e-12) the scale is 0 and the shift is the mean target.
    """
    weight = valid.to(pred.dtype)
    count = weight.sum((-2, -1), keepdim=True).clamp(min=1)
    mean_p = (weight * pred).sum((-2, -1), keepdim=True) / count
    mean_d = (weight * target).sum((-2, -1), keepdim=True) / count
    centred_p = weight * (pred - mean_p)
    variance = (centred_p**2).sum((-2, -1), keepdim=True) / count
    covariance = (centred_p * (target - mean_d)).sum((-2, -1), keepdim=True) / count
    constant = variance <= 1e-12
    scale = torch.where(constant, 0.0, covariance / torch.where(constant, 1.0, variance))
    shift = mean_d - scale * mean_p
    return scale * pred + shift


class DepthMetrics(Metric):
    """``rmse``, ``mae`` (metres), ``abs_rel``, ``log_rmse`` and ``delta1..3`` (percent).

    ``update`` takes predicted and true depth in metres, float ``[B, 1, H, W]``; pixels with true
    depth ``<= 0`` are ignored. With ``align_scale_shift`` (for scale-and-shift-invariant models,
    Hickson et al., WACV 2022, mobile), each predicted image is first aligned to its label in
    disparity space by :func:`align_disparity`, and the aligned disparity is clamped to at least the
    image's smallest true disparity (depth at most its largest true depth), as MiDaS evaluations cap
    depth.
    """

    higher_is_better: ClassVar[dict[str, bool]] = {
        "rmse": False,
        "mae": False,
        "abs_rel": False,
        "log_rmse": False,
        "delta1": True,
        "delta2": True,
        "delta3": True,
    }

    def __init__(self, align_scale_shift: bool = False) -> None:
        super().__init__()
        self.align_scale_shift = align_scale_shift
        for name in ("squared_error", "absolute_error", "relative_error", "squared_log_error"):
            self.add_state(name, torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.int64))
        self.add_state("delta_hits", torch.zeros(3, dtype=torch.int64))

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 1:
            raise ValueError(
                f"depth prediction {tuple(pred.shape)} and label {tuple(target.shape)} "
                "must both be [B, 1, H, W]"
            )
        pred = pred.detach().double().squeeze(1)
        target = target.detach().double().squeeze(1)
        valid = target > 0
        if self.align_scale_shift:
            pred = self._aligned(pred, target, valid)
        pred, target = pred[valid].cpu(), target[valid].cpu()
        if pred.numel() and pred.min() <= 0:
            raise ValueError("depth predictions must be > 0 on valid pixels")
        error = pred - target
        ratio = torch.maximum(pred / target, target / pred)
        thresholds = DELTA_BASE ** torch.arange(1, 4, dtype=torch.float64)
        self.set_state("squared_error", self.squared_error + (error**2).sum())
        self.set_state("absolute_error", self.absolute_error + error.abs().sum())
        self.set_state("relative_error", self.relative_error + (error.abs() / target).sum())
        log_error = pred.log() - target.log()
        self.set_state("squared_log_error", self.squared_log_error + (log_error**2).sum())
        self.set_state("count", self.count + target.numel())
        hits = (ratio[:, None] < thresholds).sum(0)
        self.set_state("delta_hits", self.delta_hits + hits)

    @staticmethod
    def _aligned(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Predicted depth after per-image scale/shift alignment in disparity space."""
        true_disparity = torch.where(valid, 1.0 / target.clamp(min=MIN_DISPARITY), 0.0)
        disparity = align_disparity(1.0 / pred.clamp(min=MIN_DISPARITY), true_disparity, valid)
        smallest = torch.where(valid, true_disparity, torch.inf).amin((-2, -1), keepdim=True)
        floor = torch.where(smallest.isinf(), MIN_DISPARITY, smallest)
        return 1.0 / torch.maximum(disparity, floor)

    def compute(self) -> dict[str, float]:
        """The metrics over all valid pixels seen; NaN before any."""
        count = int(self.count)
        if count == 0:
            return {name: float("nan") for name in self.higher_is_better}
        deltas = 100.0 * self.delta_hits.double() / count
        return {
            "rmse": float((self.squared_error / count).sqrt()),
            "mae": float(self.absolute_error / count),
            "abs_rel": float(self.relative_error / count),
            "log_rmse": float((self.squared_log_error / count).sqrt()),
            "delta1": float(deltas[0]),
            "delta2": float(deltas[1]),
            "delta3": float(deltas[2]),
        }
