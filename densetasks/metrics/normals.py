"""Surface-normal angle-error metrics over every labelled pixel of the set.

The usual set (Eigen & Fergus 2015; the code of Popovic et al., CVPR 2021; Hickson et al.,
WACV 2022): mean, median and RMSE of the angle between predicted and true normals in degrees,
and the percentage of pixels within 11.25°, 22.5° and 30°. Mean and RMSE come from exact sums;
the median from a histogram of angles (a sum state), so it is exact to within half a bin
(``bin_width`` degrees, 0.01 default).
"""

import math
from typing import ClassVar

import torch

from densetasks.metrics.base import Metric

WITHIN_DEGREES: dict[str, float] = {"within_11_25": 11.25, "within_22_5": 22.5, "within_30": 30.0}


def angle_degrees(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Angle in degrees between vectors along dim 1 of ``[B, 3, H, W]`` tensors -> ``[B, H, W]``.

    ``atan2(‖p × t‖, p · t)`` is accurate at small angles, where ``acos`` of a rounded
    cosine is not; neither vector needs to be unit length.
    """
    cross = torch.linalg.cross(pred, target, dim=1).norm(dim=1)
    dot = (pred * target).sum(dim=1)
    return torch.rad2deg(torch.atan2(cross, dot))


class NormalsMetrics(Metric):
    """``mean``, ``median``, ``rmse`` (degrees) and ``within_*`` (percent of pixels).

    ``update`` takes predicted and true normals ``[B, 3, H, W]``; pixels whose true vector is
    zero are unlabelled and ignored. A zero predicted vector counts as 90° off.
    """

    higher_is_better: ClassVar[dict[str, bool]] = {
        "mean": False,
        "median": False,
        "rmse": False,
        **{name: True for name in WITHIN_DEGREES},
    }
    units: ClassVar[dict[str, str]] = {
        "mean": "°",
        "median": "°",
        "rmse": "°",
        **dict.fromkeys(WITHIN_DEGREES, "%"),
    }

    def __init__(self, bin_width: float = 0.01) -> None:
        super().__init__()
        if bin_width <= 0:
            raise ValueError(f"bin_width must be > 0, got {bin_width}")
        self.bin_width = bin_width
        self.num_bins = math.ceil(180.0 / bin_width)
        self.add_state("count", torch.zeros((), dtype=torch.int64))
        self.add_state("angle_sum", torch.zeros((), dtype=torch.float64))
        self.add_state("squared_angle_sum", torch.zeros((), dtype=torch.float64))
        self.add_state("within", torch.zeros(len(WITHIN_DEGREES), dtype=torch.int64))
        self.add_state("histogram", torch.zeros(self.num_bins, dtype=torch.int64))

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 3:
            raise ValueError(
                f"normals prediction {tuple(pred.shape)} and label {tuple(target.shape)} "
                "must both be [B, 3, H, W]"
            )
        pred = pred.detach().double()
        target = target.detach().double()
        valid = target.abs().sum(dim=1) > 0
        zero_pred = pred.abs().sum(dim=1) == 0
        angles = torch.where(zero_pred, 90.0, angle_degrees(pred, target))[valid].cpu()
        limits = torch.tensor(list(WITHIN_DEGREES.values()), dtype=torch.float64)
        bins = (angles / self.bin_width).long().clamp(max=self.num_bins - 1)
        self.set_state("count", self.count + angles.numel())
        self.set_state("angle_sum", self.angle_sum + angles.sum())
        self.set_state("squared_angle_sum", self.squared_angle_sum + (angles**2).sum())
        self.set_state("within", self.within + (angles[:, None] < limits).sum(0))
        histogram = torch.bincount(bins, minlength=self.num_bins)
        self.set_state("histogram", self.histogram + histogram)

    def median(self) -> float:
        """The median angle as NumPy defines it (mean of the two middle values for an even
        count), each middle value read as the centre of its histogram bin: off by at most
        half a bin width."""
        count = int(self.count)
        cumulative = self.histogram.cumsum(0)

        def value_of_rank(rank: int) -> float:
            index = int(torch.searchsorted(cumulative, torch.tensor(rank, dtype=torch.int64)))
            return (index + 0.5) * self.bin_width

        return 0.5 * (value_of_rank((count + 1) // 2) + value_of_rank(count // 2 + 1))

    def compute(self) -> dict[str, float]:
        """The metrics over all labelled pixels seen; NaN before any."""
        count = int(self.count)
        if count == 0:
            return {name: float("nan") for name in self.higher_is_better}
        within = 100.0 * self.within.double() / count
        return {
            "mean": float(self.angle_sum / count),
            "median": self.median(),
            "rmse": math.sqrt(float(self.squared_angle_sum) / count),
            **{name: float(within[i]) for i, name in enumerate(WITHIN_DEGREES)},
        }
