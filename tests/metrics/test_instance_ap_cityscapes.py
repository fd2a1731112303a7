"""Mask AP against the official Cityscapes instance evaluation (``cityscapesscripts``) on
generated scenes: two instance classes, void, group regions, instances below the minimum
size, occlusion, shifted and wrongly classed predictions, false positives on void."""

import copy
import os

import numpy as np
import pytest
import torch
from PIL import Image

from densetasks.metrics.instance_ap import InstanceAPMetric, InstanceMap

cityscapes_eval = pytest.importorskip(
    "cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling",
    reason="the reference needs cityscapesscripts (pip install cityscapesscripts)",
)

BACKGROUND, PERSON, CAR, VOID = 0, 1, 2, 255
LABEL_IDS = {BACKGROUND: 7, PERSON: 24, CAR: 26, VOID: 0}
"""Our classes as Cityscapes label ids: road, person, car, unlabeled (void)."""

SIZE = (40, 60)


def random_box(rng: np.random.Generator, largest: int) -> tuple[slice, slice]:
    height, width = rng.integers(2, largest, size=2)
    top, left = rng.integers(0, SIZE[0] - height), rng.integers(0, SIZE[1] - width)
    return slice(top, top + height), slice(left, left + width)


def scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Ground-truth ids and semantics, predicted ids and the predicted class of every id."""
    true_ids = np.zeros(SIZE, np.int64)
    semantic = np.zeros(SIZE, np.int64)
    pred_ids = np.zeros(SIZE, np.int64)
    pred_classes: dict[int, int] = {}
    for instance in range(1, 9):
        box = random_box(rng, 26)
        true_class = int(rng.choice([PERSON, CAR]))
        true_ids[box], semantic[box] = instance, true_class
        if rng.random() < 0.8:
            shifted = tuple(
                slice(max(part.start + step, 0), part.stop + step)
                for part, step in zip(box, rng.integers(-1, 2, size=2), strict=True)
            )
            pred_ids[shifted] = instance
            pred_classes[instance] = true_class if rng.random() < 0.8 else PERSON + CAR - true_class
    for _ in range(2):  # group regions: an instance class without an instance id
        box = random_box(rng, 12)
        true_ids[box], semantic[box] = 0, int(rng.choice([PERSON, CAR]))
    for extra in range(20, 23):  # false positives, some on void
        pred_ids[random_box(rng, 15)] = extra
        pred_classes[extra] = int(rng.choice([PERSON, CAR]))
    box = random_box(rng, 18)
    true_ids[box], semantic[box] = 0, VOID
    return true_ids, semantic, pred_ids, pred_classes


def write_reference_inputs(folder, index, true_ids, semantic, pred_ids, pred_classes):
    """The ground truth as a Cityscapes ``instanceIds`` PNG and the prediction as one mask
    PNG per instance plus the text file naming label id and confidence (the pixel count)."""
    labels = np.vectorize(LABEL_IDS.get)(semantic)
    encoded = np.where(true_ids > 0, labels * 1000 + true_ids, labels)
    truth_file = folder / f"truth_{index}.png"
    Image.fromarray(encoded.astype(np.uint16)).save(truth_file)
    lines = []
    for instance in np.unique(pred_ids[pred_ids > 0]):
        mask = pred_ids == instance
        name = f"pred_{index}_{instance}.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / name)
        lines.append(f"{name} {LABEL_IDS[pred_classes[instance]]} {mask.sum()}\n")
    pred_file = folder / f"pred_{index}.txt"
    pred_file.write_text("".join(lines))
    return str(pred_file), str(truth_file)


def reference(folder, predictions: list[str], truths: list[str]) -> np.ndarray:
    """The script's AP matrix ``[class, threshold]`` over the Cityscapes instance classes, by
    the steps of its ``evaluateImgLists`` (without the JSON files it writes on the way)."""
    args = copy.deepcopy(cityscapes_eval.args)
    args.predictionPath = os.path.abspath(folder)
    args.quiet = True
    cityscapes_eval.setInstanceLabels(args)
    instances = cityscapes_eval.instances2dict(truths)
    matches = cityscapes_eval.matchGtWithPreds(predictions, truths, instances, args)
    return cityscapes_eval.evaluateMatches(matches, args)[0]


@pytest.mark.parametrize("seed", range(4))
def test_matches_cityscapes_evaluation_script(seed, tmp_path, monkeypatch):
    if not hasattr(np, "in1d"):  # cityscapesscripts 2.3.0 calls np.in1d, gone in NumPy 2.4
        monkeypatch.setattr(
            np, "in1d", lambda values, test: np.isin(values, test).ravel(), raising=False
        )
    rng = np.random.default_rng(seed)
    metric = InstanceAPMetric(
        [PERSON, CAR], min_region_size=100, min_region_resolution=None, bins_per_octave=2048
    )
    files = []
    for index in range(4):
        true_ids, semantic, pred_ids, pred_classes = scene(rng)
        pred_semantic = np.vectorize({0: BACKGROUND, **pred_classes}.__getitem__)(pred_ids)
        metric.update(
            InstanceMap(torch.from_numpy(pred_ids[None]), torch.from_numpy(pred_semantic[None])),
            InstanceMap(torch.from_numpy(true_ids[None]), torch.from_numpy(semantic[None])),
        )
        files.append(
            write_reference_inputs(tmp_path, index, true_ids, semantic, pred_ids, pred_classes)
        )
    predictions, truths = map(list, zip(*files, strict=True))
    expected = reference(tmp_path, predictions, truths)
    result = metric.compute()
    assert result["ap"] == pytest.approx(100 * np.nanmean(expected), abs=1e-9)
    assert result["ap50"] == pytest.approx(100 * np.nanmean(expected[:, 0]), abs=1e-9)
    assert result["ap75"] == pytest.approx(100 * np.nanmean(expected[:, 5]), abs=1e-9)
