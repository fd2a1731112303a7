"""BSDS-style boundary metrics in Python: ODS / OIS F-measure and average precision.

The protocol of the Berkeley benchmark (Martin et al. 2004; Arbeláez et al. 2011) and of SEISM
(Pont-Tuset & Marques 2016), which Popovic et al. (CVPR 2021) use for their odsF, without MATLAB:

1. optionally thin the probability map by non-maximum suppression (:func:`suppress_non_maxima`);
2. at each of ``K`` thresholds ``t`` the edge map is ``p ≥ t``;
3. a predicted edge pixel is *matched* when a ground-truth edge pixel lies within
   ``max_dist × image diagonal``; a ground-truth pixel is *recalled* when a predicted edge
   pixel lies within the same distance.

Step 3 is the usual one-to-many approximation of BSDS's one-to-one ``correspondPixels``:
several predicted pixels may match the same ground-truth pixel and vice versa, so precision
and recall can only be slightly *over*-estimated, never under-estimated. Both tests reduce to
a maximum filter over a disk (radius = the tolerance): a predicted pixel is matched iff the
maximum of the ground truth over the disk around it is 1, and a ground-truth pixel is
recalled at threshold ``t`` iff the maximum of the probability over its disk is ``≥ t``. That
makes every count a cumulative histogram over thresholds, computed once per image.

Pixels labelled ``IGNORE_INDEX`` are neither predictions nor ground truth and recall nothing.
"""

import math
from typing import ClassVar

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F

from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import ConfigError
from densetasks.metrics.base import Metric

_EPS = float(np.finfo(np.float64).eps)


def _triangle_smooth(image: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable triangle filter ``[1, 2, …, r + 1, …, 2, 1]`` (Dollár's ``convTri``).

    ``image`` is ``[B, H, W]``; borders are replicated.
    """
    ramp = torch.arange(1, radius + 2, dtype=image.dtype)
    kernel = torch.cat([ramp, ramp.flip(0)[1:]])
    kernel = kernel / kernel.sum()
    horizontal = (kernel.view(1, 1, 1, -1), (radius, radius, 0, 0))
    vertical = (kernel.view(1, 1, -1, 1), (0, 0, radius, radius))
    smoothed = image[:, None]
    for weights, padding in (horizontal, vertical):
        smoothed = F.conv2d(F.pad(smoothed, padding, mode="replicate"), weights)
    return smoothed[:, 0]


def _central_gradient(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(∂/∂x, ∂/∂y)`` by central differences (one-sided at the borders), ``[B, H, W]``."""
    return torch.gradient(image, dim=2)[0], torch.gradient(image, dim=1)[0]


def suppress_non_maxima(prob: torch.Tensor, smoothing: int = 4) -> torch.Tensor:
    """Zero every pixel that is not a local maximum across the edge, ``[B, H, W]`` -> same.

    As Dollár's ``edgesNms`` (structured edge toolbox): the edge normal comes from the
    Hessian of the map smoothed by a triangle filter of radius ``smoothing``; it is the
    eigenvector of the most negative eigenvalue (strongest curvature across a ridge),
    ``θ = ½·atan2(2·Pxy, Pxx − Pyy) + π/2``. A pixel survives when it is ``≥`` the map
    read bilinearly one pixel ahead and one pixel behind along that normal, so ties (a
    plateau, a two-pixel-wide binary edge) are kept. Reads outside the image repeat the border.
    """
    grad_x, grad_y = _central_gradient(_triangle_smooth(prob, smoothing))
    pxx, pxy = _central_gradient(grad_x)
    pyy = _central_gradient(grad_y)[1]
    normal = 0.5 * torch.atan2(2 * pxy, pxx - pyy) + math.pi / 2
    step = torch.stack([torch.cos(normal), torch.sin(normal)], dim=-1)  # [B, H, W, (x, y)]
    ahead = _sample_bilinear(prob, step)
    behind = _sample_bilinear(prob, -step)
    keep = (prob >= ahead) & (prob >= behind)
    return torch.where(keep, prob, torch.zeros_like(prob))


def _sample_bilinear(image: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """``image`` read bilinearly at every pixel moved by ``step`` (pixels, ``[B, H, W, 2]``
    as ``(x, y)``); positions outside the image repeat the border."""
    _batch, height, width = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=image.dtype),
        torch.arange(width, dtype=image.dtype),
        indexing="ij",
    )
    position = torch.stack([xs, ys], dim=-1) + step
    scale = torch.tensor([max(width - 1, 1), max(height - 1, 1)], dtype=image.dtype)
    grid = 2.0 * position / scale - 1.0
    sampled = F.grid_sample(
        image[:, None], grid, mode="bilinear", padding_mode="border", align_corners=True
    )
    return sampled[:, 0]


def disk_footprint(radius: float) -> np.ndarray:
    """Boolean footprint of the pixels at Euclidean distance ``≤ radius`` from the centre."""
    reach = math.floor(radius)
    offsets = np.arange(-reach, reach + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2


def f_measure(precision: np.ndarray, recall: np.ndarray, beta_squared: float = 1.0) -> np.ndarray:
    """``(1 + β²)·P·R / (β²·P + R)``, 0 where ``P`` and ``R`` are both 0."""
    denominator = np.maximum(beta_squared * precision + recall, _EPS)
    return (1.0 + beta_squared) * precision * recall / denominator


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the step precision–recall curve, thresholds ascending (recall falling):

    ``AP = Σ_k (R_k − R_{k+1})·P_k`` with ``R_{K+1} = 0``, the definition of scikit-learn's
    ``average_precision_score`` on the ``K`` threshold points. BSDS instead interpolates
    precision linearly at recall 0, 0.01, …, 1 and drops the recall range the thresholds
    do not reach, which makes a single-point curve (a binary prediction) undefined.
    """
    recall_drop = recall - np.append(recall[1:], 0.0)
    return float((recall_drop * precision).sum())


class BoundaryMetrics(Metric):
    """``odsF``, ``oisF`` and ``ap`` in percent over a set of edge probability maps.

    States (all sums over images, ``K`` = number of thresholds):
    ``matched_pred``, ``pred``, ``matched_gt``, ``gt`` int64 ``[K]`` — per threshold, the
    matched and all predicted edge pixels, the recalled and all ground-truth edge pixels;
    ``ois`` int64 ``[4]`` — the same four counts, each image taken at its own best threshold.

    ``odsF`` is the best F-measure at one threshold for the whole set (the maximum over the
    ``K`` thresholds; BSDS additionally interpolates between neighbouring thresholds, which we
    do not), ``oisF`` the F-measure of the OIS counts, ``ap`` :func:`average_precision` of the
    set's precision–recall curve. An image whose F is 0 at every threshold (for example one
    without ground-truth edges) contributes its counts at the lowest threshold, as in BSDS.
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"odsF": True, "oisF": True, "ap": True}

    def __init__(self, thresholds: int = 99, max_dist: float = 0.0075, nms: bool = True) -> None:
        super().__init__()
        if thresholds < 1:
            raise ConfigError(f"edges.thresholds must be >= 1, got {thresholds}")
        if max_dist < 0:
            raise ConfigError(f"edges.max_dist must be >= 0, got {max_dist}")
        self.thresholds = torch.linspace(0.0, 1.0, thresholds + 2, dtype=torch.float64)[1:-1]
        """``K`` thresholds evenly spaced in the open interval (0, 1)."""
        self.max_dist = max_dist
        self.nms = nms
        for name in ("matched_pred", "pred", "matched_gt", "gt"):
            self.add_state(name, torch.zeros(thresholds, dtype=torch.int64))
        self.add_state("ois", torch.zeros(4, dtype=torch.int64))

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add probabilities ``pred`` (float ``[B, H, W]``) and labels ``target`` (0/1/255)."""
        if pred.shape != target.shape or pred.ndim != 3:
            raise ValueError(
                f"edge prediction {tuple(pred.shape)} and label {tuple(target.shape)} "
                "must both be [B, H, W]"
            )
        prob = pred.detach().cpu().double()
        target = target.detach().cpu()
        if self.nms:
            prob = suppress_non_maxima(prob)
        valid = target != IGNORE_INDEX
        edge = target == 1
        footprint = disk_footprint(self.max_dist * math.hypot(*pred.shape[-2:]))[None]
        near_gt = scipy.ndimage.maximum_filter(
            edge.numpy(), footprint=footprint, mode="constant", cval=False
        )
        best_nearby = scipy.ndimage.maximum_filter(
            torch.where(valid, prob, -1.0).numpy(), footprint=footprint, mode="constant", cval=-1.0
        )
        counts = torch.stack(
            [
                self._counts_above(prob, valid & torch.from_numpy(near_gt)),
                self._counts_above(prob, valid),
                self._counts_above(torch.from_numpy(best_nearby), edge),
                edge.flatten(1).sum(1, keepdim=True).expand(-1, len(self.thresholds)),
            ]
        )  # [4, B, K]
        for name, image_counts in zip(
            ("matched_pred", "pred", "matched_gt", "gt"), counts, strict=True
        ):
            self.set_state(name, getattr(self, name) + image_counts.sum(0))
        scores = f_measure(*self._precision_recall(*counts.numpy()))  # [B, K]
        best = torch.from_numpy(scores.argmax(axis=1))
        at_best = counts.gather(2, best[None, :, None].expand(4, -1, 1))
        self.set_state("ois", self.ois + at_best.sum(dim=(1, 2)))

    def _counts_above(self, values: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        """Per image, how many ``selected`` pixels have ``values ≥ t`` for each threshold.

        One histogram of threshold bins per image, summed from the top: ``[B, K]`` int64.
        """
        bins = len(self.thresholds) + 1
        level = torch.searchsorted(self.thresholds, values.flatten(1).contiguous(), right=True)
        image = torch.arange(values.shape[0])[:, None].expand_as(level)
        keys = (image * bins + level)[selected.flatten(1)]
        histogram = torch.bincount(keys, minlength=values.shape[0] * bins).view(-1, bins)
        return histogram.flip(1).cumsum(1).flip(1)[:, 1:]

    @staticmethod
    def _precision_recall(
        matched_pred: np.ndarray, pred: np.ndarray, matched_gt: np.ndarray, gt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        precision = matched_pred / np.maximum(pred, _EPS)
        recall = matched_gt / np.maximum(gt, _EPS)
        return precision, recall

    def compute(self) -> dict[str, float]:
        """``odsF``, ``oisF`` and ``ap`` in percent (0 before any edge pixel was seen)."""
        states = (self.matched_pred, self.pred, self.matched_gt, self.gt)
        precision, recall = self._precision_recall(*(state.numpy() for state in states))
        ois_precision, ois_recall = self._precision_recall(*self.ois.numpy())
        return {
            "odsF": 100.0 * float(f_measure(precision, recall).max()),
            "oisF": 100.0 * float(f_measure(ois_precision, ois_recall)),
            "ap": 100.0 * average_precision(precision, recall),
        }
