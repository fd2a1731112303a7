"""Depth metrics pooled over every valid pixel of the set (RMSE, AbsRel, δ, disparity error, ...).

The standard monocular-depth set (Eigen et al. 2014; Lopes et al., WACV 2023, report RMSE in metres,
Hickson et al., WACV 2022, the δ accuracies) plus the error of inverse depth, in 1/m, or of
disparity ``baseline · focal / depth``, in pixels, where the dataset knows ``baseline · focal``
(Kendall et al., CVPR 2018, Table 1, "Depth Err. [px]"). All states are sums over pixels, so the
numbers are pixel-pooled over the whole evaluation set, not means of per-image values.
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
    """Depth errors in metres, ratios and percent, and inverse-depth / disparity errors.

    ``rmse``, ``mae`` (metres), ``abs_rel``, ``log_rmse``, ``delta1..3`` (percent),
    ``inverse_mae``, ``inverse_rmse`` (1/m) and, given ``disparity_scale`` = baseline · focal
    (m · px), ``disparity_mae``, ``disparity_rmse`` (px): disparity is ``disparity_scale / d``,
    so its errors are the inverse-depth errors times the scale.

    ``update`` takes predicted and true depth in metres, float ``[B, 1, H, W]``; pixels with true
    depth ``<= 0`` are ignored, and so are those beyond ``max_depth`` when it is set (stereo
    depth there is sub-pixel matching noise that would swamp the metric errors). With
    ``align_scale_shift`` (for scale-and-shift-invariant models, Hickson et al., WACV 2022,
    mobile), ``update`` takes the model's raw disparity-like output instead of a depth (any
    sign: it is only defined up to scale and shift), aligns each image to its label's
    disparity by :func:`align_disparity`, clamps the aligned disparity to at least the image's
    smallest true disparity (depth at most its largest true depth), as MiDaS evaluations cap
    depth, and scores the depth it gives.
    """

    higher_is_better: ClassVar[dict[str, bool]] = {
        "rmse": False,
        "mae": False,
        "abs_rel": False,
        "log_rmse": False,
        "delta1": True,
        "delta2": True,
        "delta3": True,
        "inverse_mae": False,
        "inverse_rmse": False,
        "disparity_mae": False,
        "disparity_rmse": False,
    }
    units: ClassVar[dict[str, str]] = {
        "rmse": "m",
        "mae": "m",
        "delta1": "%",
        "delta2": "%",
        "delta3": "%",
        "inverse_mae": "1/m",
        "inverse_rmse": "1/m",
        "disparity_mae": "px",
        "disparity_rmse": "px",
    }

    def __init__(
        self,
        align_scale_shift: bool = False,
        max_depth: float | None = None,
        disparity_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.align_scale_shift = align_scale_shift
        self.max_depth = max_depth
        self.disparity_scale = disparity_scale
        sums = ("squared_error", "absolute_error", "relative_error", "squared_log_error")
        for name in (*sums, "inverse_absolute_error", "inverse_squared_error"):
            self.add_state(name, torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.int64))
        self.add_state("delta_hits", torch.zeros(3, dtype=torch.int64))

    @property
    def names(self) -> tuple[str, ...]:
        """The names :meth:`compute` returns: the disparity errors only with a scale."""
        names = tuple(self.higher_is_better)
        if self.disparity_scale is None:
            return tuple(name for name in names if not name.startswith("disparity_"))
        return names

    def valid(self, target: torch.Tensor) -> torch.Tensor:
        """Evaluated pixels: labelled (``> 0``) and, with ``max_depth``, not beyond it."""
        valid = target > 0
        return valid if self.max_depth is None else valid & (target <= self.max_depth)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 1:
            raise ValueError(
                f"depth prediction {tuple(pred.shape)} and label {tuple(target.shape)} "
                "must both be [B, 1, H, W]"
            )
        pred = pred.detach().double().squeeze(1)
        target = target.detach().double().squeeze(1)
        valid = self.valid(target)
        if self.align_scale_shift:
            pred = self._aligned(pred, target, valid)
        pred, target = pred[valid].cpu(), target[valid].cpu()
        if pred.numel() and pred.min() <= 0:
            raise ValueError("depth predictions must be > 0 on valid pixels")
        self._add_depth_errors(pred, target)
        inverse_error = 1.0 / pred - 1.0 / target
        self._add("inverse_absolute_error", inverse_error.abs().sum())
        self._add("inverse_squared_error", (inverse_error**2).sum())

    def _add_depth_errors(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add the metric-depth sums of the valid pixels ``pred``, ``target`` (``[N]``)."""
        error = pred - target
        ratio = torch.maximum(pred / target, target / pred)
        thresholds = DELTA_BASE ** torch.arange(1, 4, dtype=torch.float64)
        self._add("squared_error", (error**2).sum())
        self._add("absolute_error", error.abs().sum())
        self._add("relative_error", (error.abs() / target).sum())
        self._add("squared_log_error", ((pred.log() - target.log()) ** 2).sum())
        self._add("count", torch.tensor(target.numel()))
        self._add("delta_hits", (ratio[:, None] < thresholds).sum(0))

    def _add(self, name: str, value: torch.Tensor) -> None:
        self.set_state(name, getattr(self, name) + value)

    @staticmethod
    def _aligned(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Depth from the disparity-like ``pred`` after per-image scale/shift alignment."""
        true_disparity = torch.where(valid, 1.0 / target.clamp(min=MIN_DISPARITY), 0.0)
        disparity = align_disparity(pred, true_disparity, valid)
        smallest = torch.where(valid, true_disparity, torch.inf).amin((-2, -1), keepdim=True)
        floor = torch.where(smallest.isinf(), MIN_DISPARITY, smallest)
        return 1.0 / torch.maximum(disparity, floor)

    def compute(self) -> dict[str, float]:
        """The metrics over all valid pixels seen; NaN before any."""
        count = int(self.count)
        if count == 0:
            return {name: float("nan") for name in self.names}
        deltas = 100.0 * self.delta_hits.double() / count
        result = {
            "rmse": float((self.squared_error / count).sqrt()),
            "mae": float(self.absolute_error / count),
            "abs_rel": float(self.relative_error / count),
            "log_rmse": float((self.squared_log_error / count).sqrt()),
            "delta1": float(deltas[0]),
            "delta2": float(deltas[1]),
            "delta3": float(deltas[2]),
            "inverse_mae": float(self.inverse_absolute_error / count),
            "inverse_rmse": float((self.inverse_squared_error / count).sqrt()),
        }
        if self.disparity_scale is not None:
            result["disparity_mae"] = self.disparity_scale * result["inverse_mae"]
            result["disparity_rmse"] = self.disparity_scale * result["inverse_rmse"]
        return result
