"""References for the instance metrics: the official Cityscapes instance evaluation
(``cityscapesscripts``, ``evalInstanceLevelSemanticLabeling.py``) run on our id maps written
as its PNG and text files, and, for :class:`InstanceSegmentationMetrics`, a grouping of the
centroid votes by scikit-learn's DBSCAN before that script.

The script is the protocol that ``InstanceAPMetric`` claims (``docs/instances.md``); COCO's
``pycocotools`` is a different protocol (greedy matching, 101-point interpolation, no void or
group regions) and is not a reference for it.
"""

import contextlib
import copy
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.cluster import DBSCAN

from densetasks.metrics.instance_ap import InstanceMap
from densetasks.metrics.instance_segmentation import InstancePrediction

from .references import offsets

INSTANCE_LABEL_IDS = (24, 25, 26, 27, 28, 31, 32, 33)
"""Cityscapes' evaluated instance classes (person, rider, car, truck, bus, train, motorcycle,
bicycle) as label ids: our ``classes`` are written as these, in order."""

ROAD, UNLABELED = 7, 0
"""Label ids for any other class (not evaluated) and for void."""

MERGED, OTHER = -2, -3
"""Stand-in classes of the class-agnostic evaluation: any instance class, any other class."""


def cityscapes_ap(
    pred: InstanceMap,
    truth: InstanceMap,
    classes: Sequence[int],
    min_region_size: float,
    ignore_index: int = 255,
) -> np.ndarray:
    """The script's AP ``[class, IoU threshold]`` for ``classes`` over every image.

    Each ground-truth id must cover one class (the PNG format has one label per instance);
    a predicted instance is written with the majority class of the predicted semantic map
    under it (ties: the smaller class) and its pixel count as confidence.
    """
    script = pytest.importorskip(
        "cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling",
        reason="the reference needs cityscapesscripts (pip install cityscapesscripts)",
    )
    label_of = {value: INSTANCE_LABEL_IDS[index] for index, value in enumerate(classes)}
    with tempfile.TemporaryDirectory() as name, _numpy_in1d():
        folder = Path(name)
        files = [
            _write_image(folder, index, *arrays, label_of, ignore_index)
            for index, arrays in enumerate(
                zip(
                    pred.ids.numpy(),
                    pred.semantic.numpy(),
                    truth.ids.numpy(),
                    truth.semantic.numpy(),
                    strict=True,
                )
            )
        ]
        predictions, truths = map(list, zip(*files, strict=True))
        args = copy.deepcopy(script.args)
        args.predictionPath = os.path.abspath(folder)
        args.quiet = True
        args.minRegionSizes = np.array([min_region_size])
        script.setInstanceLabels(args)
        instances = script.instances2dict(truths)
        matches = script.matchGtWithPreds(predictions, truths, instances, args)
        return script.evaluateMatches(matches, args)[0, : len(classes)]


def _write_image(
    folder, index, pred_ids, pred_semantic, true_ids, true_semantic, label_of, ignore_index
):
    """Ground truth as an ``instanceIds`` PNG (void as "unlabeled", classes outside
    ``label_of`` as "road"), the prediction as one mask PNG per instance and the text file
    naming each mask's label id and confidence."""
    labels = np.vectorize(lambda value: label_of.get(int(value), ROAD))(true_semantic)
    labels[true_semantic == ignore_index] = UNLABELED
    for instance in np.unique(true_ids[true_ids > 0]):
        assert len(np.unique(labels[true_ids == instance])) == 1, "one class per instance"
    encoded = np.where((true_ids > 0) & (labels != UNLABELED), labels * 1000 + true_ids, labels)
    truth_file = folder / f"truth_{index}.png"
    Image.fromarray(encoded.astype(np.uint16)).save(truth_file)
    lines = []
    for instance in np.unique(pred_ids[pred_ids > 0]):
        mask = pred_ids == instance
        values, counts = np.unique(pred_semantic[mask], return_counts=True)
        label = label_of.get(int(values[np.argmax(counts)]), ROAD)
        name = f"pred_{index}_{instance}.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / name)
        lines.append(f"{name} {label} {mask.sum()}\n")
    pred_file = folder / f"pred_{index}.txt"
    pred_file.write_text("".join(lines))
    return str(pred_file), str(truth_file)


def _numpy_in1d():
    """cityscapesscripts 2.3.0 calls ``np.in1d``, which NumPy 2.4 removed."""
    if hasattr(np, "in1d"):
        return contextlib.nullcontext()
    shim = lambda values, test: np.isin(values, test).ravel()  # noqa: E731
    return mock.patch.object(np, "in1d", shim, create=True)


def instance_ap(
    pred: InstanceMap | torch.Tensor,
    target: InstanceMap | torch.Tensor,
    *,
    classes: Sequence[int] | None,
    min_region_size: float,
    ignore_index: int = 255,
) -> dict:
    """``InstanceAPMetric``'s numbers from the script: per class (the class means), and the
    class-agnostic ones from the script run again with every instance class written as one.
    Plain id tensors are one class; with ``classes`` but a plain-id target, per-class is NaN.
    """
    if isinstance(pred, torch.Tensor):
        pred = InstanceMap(pred, torch.full_like(pred, MERGED))
    if isinstance(target, torch.Tensor):
        merged_target, target = InstanceMap(target, torch.where(target > 0, MERGED, OTHER)), None
    else:
        of_instance_class = (
            target.ids > 0 if not classes else torch.isin(target.semantic, torch.tensor(classes))
        )
        semantic = torch.where(of_instance_class, MERGED, OTHER)
        semantic = torch.where(target.semantic == ignore_index, ignore_index, semantic)
        merged_target = InstanceMap(target.ids, semantic)
    merged_pred = InstanceMap(pred.ids, torch.full_like(pred.ids, MERGED))
    agnostic = cityscapes_ap(merged_pred, merged_target, [MERGED], min_region_size, ignore_index)
    if not classes:
        per_class = agnostic
    elif target is None:
        per_class = np.full((len(classes), agnostic.shape[1]), np.nan)
    else:
        per_class = cityscapes_ap(pred, target, classes, min_region_size, ignore_index)
    return {
        "ap": _percent_mean(per_class.mean(axis=1)),
        "ap50": _percent_mean(per_class[:, 0]),
        "ap75": _percent_mean(per_class[:, 5]),
        "ap_agnostic": _percent_mean(agnostic.mean(axis=1)),
        "ap50_agnostic": _percent_mean(agnostic[:, 0]),
    }


def _percent_mean(values: np.ndarray) -> float:
    """Percent mean over the classes with a number (the script's ``nanmean``)."""
    present = values[~np.isnan(values)]
    return 100 * float(present.mean()) if present.size else math.nan


def dbscan_instances(
    offsets_map: np.ndarray, semantic: np.ndarray, classes: Sequence[int]
) -> np.ndarray:
    """Instance ids ``[H, W]`` from votes ``position + offset`` of the pixels predicted as an
    instance class: DBSCAN (radius 1.5 px, 3 votes), every vote then given the id of the
    nearest cluster mean; no cluster at all makes the votes one instance."""
    voting = np.isin(semantic, classes)
    ys, xs = np.nonzero(voting)
    votes = np.stack([xs + offsets_map[0][voting], ys + offsets_map[1][voting]], axis=1)
    ids = np.zeros(semantic.shape, dtype=np.int64)
    if not len(votes):
        return ids
    labels = DBSCAN(eps=1.5, min_samples=3).fit(votes).labels_
    clusters = sorted(set(labels) - {-1})
    if not clusters:
        ids[voting] = 1
        return ids
    centres = np.stack([votes[labels == label].mean(0) for label in clusters])
    nearest = np.linalg.norm(votes[:, None] - centres[None], axis=2).argmin(1)
    ids[voting] = nearest + 1
    return ids


def instance_segmentation(
    pred: InstancePrediction | torch.Tensor,
    target: InstanceMap | torch.Tensor,
    *,
    classes: Sequence[int],
    min_region_size: float,
) -> dict:
    """Offset error by :func:`references.offsets`; AP by :func:`instance_ap` on the masks
    that :func:`dbscan_instances` forms, each with the predicted semantic map (NaN AP for a
    prediction of offsets alone)."""
    ids = target.ids if isinstance(target, InstanceMap) else target
    if isinstance(pred, torch.Tensor):
        nan = dict.fromkeys(["ap", "ap50", "ap75", "ap_agnostic", "ap50_agnostic"], math.nan)
        return {**offsets(pred, ids), **nan}
    grouped = torch.from_numpy(
        np.stack(
            [
                dbscan_instances(image, semantic, classes)
                for image, semantic in zip(
                    pred.offsets.double().numpy(), pred.semantic.numpy(), strict=True
                )
            ]
        )
    )
    masks = instance_ap(
        InstanceMap(grouped, pred.semantic),
        target,
        classes=classes,
        min_region_size=min_region_size,
    )
    return {**offsets(pred.offsets, ids), **masks}
