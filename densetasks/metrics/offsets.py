"""Instance offset error: mean distance in pixels between predicted and true centroid offsets.

Kendall et al. (CVPR 2018, Table 1) report the instance task as "mean error in pixels" without
naming the norm; we use the Euclidean distance ``‖x̂_n − x_n‖₂`` of the 2-D offset vectors, averaged
over every instance pixel of the set (one mean over pixels, not a mean of per-image means).
"""

from typing import ClassVar

import torch

from densetasks.data.derive import centroid_offsets
from densetasks.metrics.base import Metric


class OffsetErrorMetric(Metric):
    """``offset_error`` (pixels, lower is better) over the instance pixels seen.

    States: ``error_sum`` float64 (sum of the per-pixel distances) and ``pixels`` int64.
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"offset_error": False}
    units: ClassVar[dict[str, str]] = {"offset_error": "px"}

    def __init__(self) -> None:
        super().__init__()
        self.add_state("error_sum", torch.zeros((), dtype=torch.float64))
        self.add_state("pixels", torch.zeros((), dtype=torch.int64))

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add offsets ``pred`` (float ``[B, 2, H, W]``) and ids ``target`` (int ``[B, H, W]``)."""
        expected = (target.shape[0], 2, *target.shape[-2:])
        if target.ndim != 3 or pred.shape != expected:
            raise ValueError(
                f"offset prediction {tuple(pred.shape)} must be [B, 2, H, W] for ids "
                f"{tuple(target.shape)}"
            )
        true_offsets, instance = centroid_offsets(target.detach().cpu())
        difference = pred.detach().cpu().double() - true_offsets.double()
        error = torch.hypot(difference[:, 0][instance], difference[:, 1][instance])
        self.set_state("error_sum", self.error_sum + error.sum())
        self.set_state("pixels", self.pixels + instance.sum())

    def compute(self) -> dict[str, float]:
        """``offset_error`` in pixels; NaN before any instance pixel was seen."""
        pixels = int(self.pixels)
        return {"offset_error": float(self.error_sum) / pixels if pixels else float("nan")}
