"""Plain references for the dense metrics, written from each protocol and not from the
project's code: every function takes all predictions and targets of a set concatenated
(``[N, ...]`` tensors, as the metric's ``update`` takes a batch) and returns what the
metric's ``compute()`` should. Loops and ``np`` one-liners over pooled pixels, NaN where
the protocol has no number. The instance references are in ``instance_references.py``.
"""

import math

import numpy as np
import pytest
import torch

from densetasks.data.sample import IGNORE_INDEX
from densetasks.metrics.boundary import suppress_non_maxima

NAN = float("nan")


def segmentation(pred: torch.Tensor, target: torch.Tensor, *, num_classes: int) -> dict:
    """mIoU over the classes present in the target or the prediction anywhere in the set
    (one confusion over every labelled pixel, not a mean of per-image IoUs), pixel accuracy."""
    pred, target = pred.numpy().ravel(), target.numpy().ravel()
    keep = target != IGNORE_INDEX
    pred, target = pred[keep], target[keep]
    if not keep.any():
        return {"miou": NAN, "pixel_acc": NAN}
    ious = []
    for k in range(num_classes):
        union = np.sum((pred == k) | (target == k))
        if union:
            ious.append(np.sum((pred == k) & (target == k)) / union)
    return {"miou": 100 * np.mean(ious), "pixel_acc": 100 * np.mean(pred == target)}


DEPTH_NAMES = (
    "rmse",
    "mae",
    "abs_rel",
    "log_rmse",
    "delta1",
    "delta2",
    "delta3",
    "inverse_mae",
    "inverse_rmse",
)


def depth(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    max_depth: float | None = None,
    disparity_scale: float | None = None,
    align_scale_shift: bool = False,
) -> dict:
    """The standard errors pooled over every pixel with a label in ``(0, max_depth]``; with
    ``align_scale_shift``, each image's raw output first fitted to the true disparity by
    least squares (``np.linalg.lstsq``) and clamped to the image's smallest true disparity."""
    pred, target = pred.double().numpy()[:, 0], target.double().numpy()[:, 0]
    keep = (target > 0) & (target <= (np.inf if max_depth is None else max_depth))
    if align_scale_shift:
        pred = np.stack([_aligned(*image) for image in zip(pred, target, keep, strict=True)])
    names = DEPTH_NAMES + (() if disparity_scale is None else ("disparity_mae", "disparity_rmse"))
    p, t = pred[keep], target[keep]
    if not p.size:
        return dict.fromkeys(names, NAN)
    ratio = np.maximum(p / t, t / p)
    inverse_error = 1 / p - 1 / t
    result = {
        "rmse": np.sqrt(np.mean((p - t) ** 2)),
        "mae": np.mean(np.abs(p - t)),
        "abs_rel": np.mean(np.abs(p - t) / t),
        "log_rmse": np.sqrt(np.mean((np.log(p) - np.log(t)) ** 2)),
        **{f"delta{i}": 100 * np.mean(ratio < 1.25**i) for i in (1, 2, 3)},
        "inverse_mae": np.mean(np.abs(inverse_error)),
        "inverse_rmse": np.sqrt(np.mean(inverse_error**2)),
    }
    if disparity_scale is not None:
        disparity_error = disparity_scale / p - disparity_scale / t
        result["disparity_mae"] = np.mean(np.abs(disparity_error))
        result["disparity_rmse"] = np.sqrt(np.mean(disparity_error**2))
    return result


def _aligned(output: np.ndarray, depth: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Depth from a disparity-like ``output`` fitted as ``s·o + t`` to ``1 / depth``."""
    if not keep.any():
        return output
    disparity, values = 1 / depth[keep], output[keep]
    if np.ptp(values) == 0:  # nothing to scale: the best fit is the mean disparity
        scale, shift = 0.0, disparity.mean()
    else:
        design = np.stack([values, np.ones_like(values)], axis=1)
        (scale, shift), *_ = np.linalg.lstsq(design, disparity, rcond=None)
    return 1 / np.maximum(scale * output + shift, disparity.min())


NORMALS_LIMITS = {"within_11_25": 11.25, "within_22_5": 22.5, "within_30": 30.0}


def normals(pred: torch.Tensor, target: torch.Tensor) -> dict:
    """Angles by ``arccos`` of the normalised dot product over the pixels with a non-zero
    label (a zero prediction is 90° off); mean, ``np.median``, RMSE, fractions within."""
    pred = pred.double().numpy().transpose(0, 2, 3, 1).reshape(-1, 3)
    target = target.double().numpy().transpose(0, 2, 3, 1).reshape(-1, 3)
    keep = np.abs(target).sum(1) > 0
    pred, target = pred[keep], target[keep]
    if not len(pred):
        return dict.fromkeys(["mean", "median", "rmse", *NORMALS_LIMITS], NAN)
    norms = np.linalg.norm(pred, axis=1) * np.linalg.norm(target, axis=1)
    cosine = (pred * target).sum(1) / np.where(norms > 0, norms, 1.0)
    angles = np.where(norms > 0, np.degrees(np.arccos(np.clip(cosine, -1, 1))), 90.0)
    return {
        "mean": angles.mean(),
        "median": np.median(angles),
        "rmse": np.sqrt((angles**2).mean()),
        **{name: 100 * np.mean(angles < limit) for name, limit in NORMALS_LIMITS.items()},
    }


def true_offsets(ids: np.ndarray) -> np.ndarray:
    """``(dx, dy)`` ``[2, H, W]`` from each pixel to the mean position of its instance."""
    offsets = np.zeros((2, *ids.shape))
    ys, xs = np.mgrid[: ids.shape[0], : ids.shape[1]]
    for instance_id in np.unique(ids[ids > 0]):
        pixels = ids == instance_id
        offsets[0][pixels] = xs[pixels].mean() - xs[pixels]
        offsets[1][pixels] = ys[pixels].mean() - ys[pixels]
    return offsets


def offsets(pred: torch.Tensor, target: torch.Tensor) -> dict:
    """Euclidean distance between predicted and true offsets, pooled over instance pixels."""
    errors = [
        np.linalg.norm(image - true_offsets(ids), axis=0)[ids > 0]
        for image, ids in zip(pred.double().numpy(), target.numpy(), strict=True)
    ]
    pooled = np.concatenate(errors)
    return {"offset_error": pooled.mean() if pooled.size else NAN}


SALIENCY_THRESHOLDS = np.linspace(0.2, 0.9, 15)
"""``mask_thres`` of the ASTMT ``eval_sal.py``."""


def saliency(pred: torch.Tensor, target: torch.Tensor, *, protocol: str) -> dict:
    """``maxF`` and ``maxIoU`` by the named protocol (``docs/tasks/saliency.md``)."""
    protocols = {"per_image_f1": _per_image_saliency, "pooled_beta2_0.3": _pooled_saliency}
    return protocols[protocol](pred.double().numpy(), target.numpy())


def _pooled_saliency(prob: np.ndarray, label: np.ndarray) -> dict:
    """Counts pooled over the set (``p ≥ t``), then F with β² = 0.3 and IoU, best threshold."""
    valid = label != IGNORE_INDEX
    salient = (label == 1) & valid
    best_f = best_iou = 0.0
    for threshold in SALIENCY_THRESHOLDS:
        predicted = (prob >= threshold) & valid
        tp = (predicted & salient).sum()
        fp = (predicted & ~salient).sum()
        fn = (~predicted & salient).sum()
        precision = tp / max(tp + fp, 1)
        recall = tp / max(tp + fn, 1)
        if precision + recall > 0:
            best_f = max(best_f, 1.3 * precision * recall / (0.3 * precision + recall))
        best_iou = max(best_iou, tp / max(tp + fp + fn, 1))
    return {"maxF": 100 * best_f, "maxIoU": 100 * best_iou}


def _per_image_saliency(prob: np.ndarray, label: np.ndarray) -> dict:
    """Per image P, R, IoU (``p > t``), means over images, then F₁; best threshold. Images
    without a labelled pixel are skipped; no salient pixel and no prediction is IoU 1."""
    scores = []  # [images, thresholds, (P, R, IoU)]
    for image_prob, image_label in zip(prob, label, strict=True):
        valid = image_label != IGNORE_INDEX
        if not valid.any():
            continue
        gt = image_label[valid] == 1
        rows = []
        for threshold in SALIENCY_THRESHOLDS:
            pred = image_prob[valid] > threshold
            tp, fp, fn = (pred & gt).sum(), (pred & ~gt).sum(), (~pred & gt).sum()
            iou = 1.0 if not (gt.any() or pred.any()) else tp / (pred | gt).sum()
            rows.append((tp / (tp + fp + 1e-12), tp / (tp + fn + 1e-12), iou))
        scores.append(rows)
    if not scores:
        return {"maxF": 0.0, "maxIoU": 0.0}
    precision, recall, iou = np.asarray(scores).mean(0).T
    f1 = 2 * precision * recall / (precision + recall + 1e-12)
    return {"maxF": 100 * f1.max(), "maxIoU": 100 * iou.max()}


def augmenting_path_matching(edges: list[list[int]], columns: int) -> int:
    """Maximum bipartite matching by Kuhn's augmenting paths (rows -> lists of columns)."""
    owner = [-1] * columns

    def augment(row: int, seen: set[int]) -> bool:
        for column in edges[row]:
            if column not in seen:
                seen.add(column)
                if owner[column] < 0 or augment(owner[column], seen):
                    owner[column] = row
                    return True
        return False

    return sum(augment(row, set()) for row in range(len(edges)))


def bsds_counts(prob: np.ndarray, label: np.ndarray, thresholds, radius: float) -> np.ndarray:
    """The BSDS loop of one image written plainly, ``[K, 4]``: per threshold, threshold,
    thin (scikit-image), drop ignored pixels, match by augmenting paths over all pixel pairs
    within ``radius``; matched and all predicted, matched and all ground-truth pixels."""
    skimage_morphology = pytest.importorskip("skimage.morphology")
    gt = np.argwhere(label == 1)
    counts = []
    for threshold in thresholds:
        bmap = skimage_morphology.thin(prob >= threshold) & (label != IGNORE_INDEX)
        pred = np.argwhere(bmap)
        distances = np.hypot(*(pred[:, None, :] - gt[None, :, :]).transpose(2, 0, 1))
        matched = augmenting_path_matching(
            [list(np.flatnonzero(row <= radius)) for row in distances], len(gt)
        )
        counts.append([matched, len(pred), matched, len(gt)])
    return np.array(counts)


def boundary(
    pred: torch.Tensor, target: torch.Tensor, *, thresholds: int, max_dist: float, nms: bool
) -> dict:
    """ODS, OIS and AP from :func:`bsds_counts` at BSDS's ``K`` thresholds
    ``linspace(1/(K+1), 1-1/(K+1), K)``.

    With ``nms`` the maps are first thinned across the edge by the project's
    ``suppress_non_maxima``: a pre-processing step (HED / SEISM), not part of the benchmark,
    checked on its own by hand-made cases in ``test_boundary_metrics.py``.
    """
    levels = np.linspace(1 / (thresholds + 1), 1 - 1 / (thresholds + 1), thresholds)
    prob = pred.double()
    if nms:
        prob = suppress_non_maxima(prob)
    radius = max_dist * math.hypot(*pred.shape[-2:])
    counts = np.stack(
        [
            bsds_counts(image, label, levels, radius)
            for image, label in zip(prob.numpy(), target.numpy(), strict=True)
        ]
    )  # [images, K, 4]
    precision, recall, f = _precision_recall_f(counts.sum(0))
    best = [int(np.argmax(_precision_recall_f(image)[2])) for image in counts]  # ties: lowest t
    ois = sum(image[index] for image, index in zip(counts, best, strict=True))
    area = sum(
        (recall[k] - (recall[k + 1] if k + 1 < len(levels) else 0.0)) * precision[k]
        for k in range(len(levels))
    )
    return {"odsF": 100 * f.max(), "oisF": 100 * _precision_recall_f(ois)[2], "ap": 100 * area}


def _precision_recall_f(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P, R and F₁ from ``[..., (matched pred, pred, matched gt, gt)]``, 0 for 0 / 0."""
    matched_pred, pred, matched_gt, gt = np.moveaxis(counts.astype(np.float64), -1, 0)
    precision = np.where(pred > 0, matched_pred / np.maximum(pred, 1), 0.0)
    recall = np.where(gt > 0, matched_gt / np.maximum(gt, 1), 0.0)
    total = np.maximum(precision + recall, 1e-300)
    return precision, recall, np.where(precision + recall > 0, 2 * precision * recall / total, 0.0)
