"""BSDS boundary metrics in Python: ODS / OIS F-measure and average precision.

The protocol of the Berkeley benchmark (Martin, Fowlkes & Malik, TPAMI 2004; Arbeláez et al.,
TPAMI 2011, BSDS500) and of SEISM (Pont-Tuset & Marques 2016), which Popovic et al. (CVPR 2021)
use for their odsF, without MATLAB:

1. optionally thin the probability map by non-maximum suppression (:func:`suppress_non_maxima`),
   as HED / SEISM do before the benchmark;
2. at each of ``K`` thresholds ``t`` the edge map is ``p ≥ t``, thinned to one pixel by
   morphological thinning (:func:`thin`, MATLAB's ``bwmorph(…, 'thin', inf)``) as
   ``evaluation_bdry_image.m`` does;
3. predicted and ground-truth edge pixels are matched **one-to-one** within
   ``max_dist × image diagonal`` (BSDS ``correspondPixels``): the counts are the size of a
   maximum bipartite matching of the pairs within that distance (:func:`matching_size`).
   ``correspondPixels`` solves a minimum-cost assignment whose outlier cost (100 × the
   tolerance) makes it maximise the number of matched pairs first, so the cardinality is the
   same; a predicted pixel is correct and a ground-truth pixel recalled iff it is matched.

Pixels labelled ``IGNORE_INDEX`` are neither predictions nor ground truth.
"""

import math
from typing import ClassVar, Literal

import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F
from scipy.sparse.csgraph import maximum_bipartite_matching

from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import ConfigError
from densetasks.metrics.base import Metric

_EPS = float(np.finfo(np.float64).eps)

TOLERANCE_PRESETS: dict[str, float] = {"bsds": 0.0075, "pascal": 0.0075, "nyud": 0.011}
"""``max_dist`` (fraction of the image diagonal) the field uses per dataset: 0.0075 on BSDS500
(Arbeláez et al., TPAMI 2011) and PASCAL-Context (Maninis et al., CVPR 2019; Popovic et al.,
CVPR 2021), 0.011 on NYUD-v2 (Gupta et al., ECCV 2014; Xie & Tu, HED, ICCV 2015)."""

Tolerance = float | Literal["bsds", "pascal", "nyud"]


def resolve_tolerance(max_dist: Tolerance) -> float:
    """``max_dist`` as a fraction of the diagonal: a number as given, a preset name looked up
    in :data:`TOLERANCE_PRESETS`; unknown names and negative numbers are ConfigErrors."""
    if isinstance(max_dist, str):
        if max_dist not in TOLERANCE_PRESETS:
            raise ConfigError(
                f"edges.max_dist must be a number or one of {sorted(TOLERANCE_PRESETS)}, "
                f"got {max_dist!r}"
            )
        return TOLERANCE_PRESETS[max_dist]
    if max_dist < 0:
        raise ConfigError(f"edges.max_dist must be >= 0, got {max_dist}")
    return float(max_dist)


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


def _neighbourhood(code: int) -> list[bool]:
    """The 8 neighbours encoded in ``code``: bit 0 east, then counter-clockwise (NE, N, NW, W,
    SW, S, SE), the order of the thinning conditions below."""
    return [bool(code >> bit & 1) for bit in range(8)]


def _deletable(code: int, first: bool) -> bool:
    """Whether a set pixel with neighbourhood ``code`` is removed in the first (``first``) or
    second sub-iteration of Guo & Hall's thinning (CACM 1989, algorithm A1), the algorithm of
    MATLAB's ``bwmorph(…, 'thin')`` and scikit-image's ``thin``.

    G1: exactly one 8-connected component of neighbours (the pixel is simple); G2: 2 or 3
    neighbours in the sparser pairing (not an end point, not interior); G3 / G3': not on the
    north-east (first) or south-west (second) side of the stroke's interior.
    """
    bits = _neighbourhood(code)
    crossings = sum(not bits[i] and (bits[i + 1] or bits[(i + 2) % 8]) for i in (0, 2, 4, 6))
    n1 = sum(bits[k] or bits[k - 1] for k in (1, 3, 5, 7))
    n2 = sum(bits[k] or bits[(k + 1) % 8] for k in (1, 3, 5, 7))
    if crossings != 1 or min(n1, n2) not in (2, 3):
        return False
    a, b, c, d = (1, 2, 7, 0) if first else (5, 6, 3, 4)
    return not ((bits[a] or bits[b] or not bits[c]) and bits[d])


_THIN_TABLES = tuple(
    np.array([_deletable(code, first) for code in range(256)]) for first in (True, False)
)
"""Deletion look-up tables of the two sub-iterations, indexed by the neighbourhood code."""

_NEIGHBOUR_STEPS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))
"""``(dy, dx)`` of neighbourhood bits 0…7 (east, then counter-clockwise)."""


def thin(masks: np.ndarray) -> np.ndarray:
    """Thin every 2-D binary map of ``masks`` (bool ``[..., H, W]``) to one-pixel-wide lines,
    to convergence, as MATLAB's ``bwmorph(bmap, 'thin', inf)`` in the BSDS benchmark.

    Same algorithm and tables as ``skimage.morphology.thin`` (pixels outside the image are 0),
    evaluated only where a deletion can happen, for all maps at once: first at the set pixels
    with an unset 4-neighbour (no other pixel is deletable), then, per sub-iteration, at the
    set neighbours of the pixels deleted since that sub-iteration last ran (a pixel whose
    neighbourhood did not change keeps its verdict). Thick blobs are peeled layer by layer
    without revisiting their interior.
    """
    *stack, height, width = masks.shape
    padded = np.pad(masks.reshape(-1, height, width), ((0, 0), (1, 1), (1, 1)))
    volume = padded.astype(np.uint8).ravel()
    steps = np.array([dy * (width + 2) + dx for dy, dx in _NEIGHBOUR_STEPS])
    alive = np.flatnonzero(volume)
    on_border = np.zeros(len(alive), dtype=bool)
    for step in steps[::2]:
        on_border |= volume[alive + step] == 0
    pending = [alive[on_border], alive[on_border]]
    stamp = np.empty(len(volume), dtype=np.int64)
    remaining = len(alive)
    while len(pending[0]) or len(pending[1]):
        for sub, table in enumerate(_THIN_TABLES):
            code = np.zeros(len(pending[sub]), dtype=np.uint8)
            for bit, step in enumerate(steps):
                code |= volume[pending[sub] + step] << bit
            deleted = pending[sub][table[code]]
            volume[deleted] = 0
            remaining -= len(deleted)
            if 8 * len(deleted) > remaining:  # cheaper to look at every set voxel again
                pending = [np.flatnonzero(volume)] * 2
                continue
            pending[sub] = _distinct_set((deleted[:, None] + steps).ravel(), volume, stamp)
            pending[1 - sub] = _distinct_set(
                np.concatenate([pending[1 - sub], pending[sub]]), volume, stamp
            )
    thinned = volume.reshape(padded.shape)[:, 1:-1, 1:-1].astype(bool)
    return thinned.reshape(*stack, height, width)


def _distinct_set(indices: np.ndarray, volume: np.ndarray, stamp: np.ndarray) -> np.ndarray:
    """``indices`` of set voxels of ``volume``, each once (order kept), without sorting:
    writing positions into ``stamp`` leaves one position per voxel to read back."""
    indices = indices[volume[indices] == 1]
    positions = np.arange(len(indices))
    stamp[indices] = positions
    return indices[stamp[indices] == positions]


def _pairs_within(
    pred: np.ndarray, gt: np.ndarray, radius: float
) -> tuple[np.ndarray, scipy.sparse.csr_matrix]:
    """The candidate graph of ``correspondPixels``: pixels of ``pred`` (bool ``[H, W]``) that
    have a ``gt`` pixel within ``radius``, and the biadjacency (those pixels × all ``gt``
    pixels, row-major order) of the pairs at distance ``≤ radius``.

    Returns the flat indices of those ``pred`` pixels and the CSR matrix.
    """
    height, width = gt.shape
    gt_id = np.full(gt.shape, -1, dtype=np.int64)
    gt_id[gt] = np.arange(int(gt.sum()))
    ys, xs = np.nonzero(pred)
    rows, cols = [], []
    reach = np.arange(-math.floor(radius), math.floor(radius) + 1)
    for dy, dx in zip(*np.nonzero(disk_footprint(radius)), strict=True):
        y, x = ys + reach[dy], xs + reach[dx]
        inside = np.flatnonzero((y >= 0) & (y < height) & (x >= 0) & (x < width))
        ids = gt_id[y[inside], x[inside]]
        rows.append(inside[ids >= 0])
        cols.append(ids[ids >= 0])
    row, col = np.concatenate(rows), np.concatenate(cols)
    near, row = np.unique(row, return_inverse=True)
    graph = scipy.sparse.csr_matrix(
        (np.ones(len(row), dtype=np.int8), (row, col)), shape=(len(near), int(gt.sum()))
    )
    return ys[near] * width + xs[near], graph


def matching_size(graph: scipy.sparse.csr_matrix) -> int:
    """Size of a maximum matching of the bipartite ``graph`` (Hopcroft–Karp, in scipy)."""
    if graph.nnz == 0:
        return 0
    return int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum())


def image_counts(
    prob: np.ndarray, label: np.ndarray, thresholds: np.ndarray, radius: float
) -> np.ndarray:
    """BSDS counts of one image, int64 ``[K, 4]``: per threshold the matched and all predicted
    edge pixels, the matched and all ground-truth edge pixels (one-to-one, so the two matched
    counts are equal).

    ``prob`` is float ``[H, W]``, ``label`` 0 / 1 / ``IGNORE_INDEX``. Every thinned map of the
    ``K`` thresholds lies inside ``p ≥ t₁``, so the candidate pairs are found once, for that
    set, and each threshold's graph is a selection of its rows.
    """
    valid, gt = label != IGNORE_INDEX, label == 1
    thinned = thin(prob[None] >= thresholds[:, None, None]) & valid
    candidates, graph = _pairs_within(thinned.any(0), gt, radius)
    selected = thinned.reshape(len(thresholds), -1)[:, candidates]
    matched = [matching_size(graph[rows]) for rows in selected]
    predicted = thinned.sum(axis=(1, 2))
    return np.stack(
        [matched, predicted, matched, np.full_like(predicted, int(gt.sum()))], axis=1
    ).astype(np.int64)


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
    """``odsF``, ``oisF`` and ``ap`` in percent over a set of edge probability maps, by the
    BSDS protocol (module docstring).

    States (all sums over images, ``K`` = number of thresholds):
    ``matched_pred``, ``pred``, ``matched_gt``, ``gt`` int64 ``[K]`` — per threshold, the
    matched and all predicted edge pixels, the matched and all ground-truth edge pixels;
    ``ois`` int64 ``[4]`` — the same four counts, each image taken at its own best threshold.

    ``odsF`` is the best F-measure at one threshold for the whole set (the maximum over the
    ``K`` thresholds; BSDS additionally interpolates between neighbouring thresholds, which we
    do not), ``oisF`` the F-measure of the OIS counts, ``ap`` :func:`average_precision` of the
    set's precision–recall curve. An image whose F is 0 at every threshold (for example one
    without ground-truth edges) contributes its counts at the lowest threshold, as in BSDS.
    ``max_dist`` is a fraction of the image diagonal or a :data:`TOLERANCE_PRESETS` name.
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"odsF": True, "oisF": True, "ap": True}
    units: ClassVar[dict[str, str]] = {"odsF": "%", "oisF": "%", "ap": "%"}

    def __init__(
        self, thresholds: int = 99, max_dist: Tolerance = 0.0075, nms: bool = True
    ) -> None:
        super().__init__()
        if thresholds < 1:
            raise ConfigError(f"edges.thresholds must be >= 1, got {thresholds}")
        self.max_dist = resolve_tolerance(max_dist)
        self.thresholds = torch.linspace(0.0, 1.0, thresholds + 2, dtype=torch.float64)[1:-1]
        """``K`` thresholds evenly spaced in the open interval (0, 1), as BSDS's
        ``linspace(1/(K+1), 1-1/(K+1), K)``."""
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
        if self.nms:
            prob = suppress_non_maxima(prob)
        radius = self.max_dist * math.hypot(*pred.shape[-2:])
        thresholds = self.thresholds.numpy()
        counts = np.stack(
            [
                image_counts(image, label, thresholds, radius)
                for image, label in zip(prob.numpy(), target.detach().cpu().numpy(), strict=True)
            ]
        )  # [B, K, 4]
        for index, name in enumerate(("matched_pred", "pred", "matched_gt", "gt")):
            self.set_state(name, getattr(self, name) + torch.from_numpy(counts[..., index].sum(0)))
        scores = f_measure(*self._precision_recall(*np.moveaxis(counts, -1, 0)))  # [B, K]
        at_best = counts[np.arange(len(counts)), scores.argmax(axis=1)]  # [B, 4]
        self.set_state("ois", self.ois + torch.from_numpy(at_best.sum(0)))

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
