"""Generated inputs that several metric tests share: edge maps with one-pixel boundaries,
Cityscapes-like instance scenes and centroid-vote scenes. Each draws from the generator it
is given, so a seed fixes a case."""

import numpy as np
import scipy.ndimage

from .references import true_offsets

BACKGROUND, PERSON, CAR, VOID = 0, 1, 2, 255


def segment_boundaries(height: int, width: int, seeds: int, generator) -> np.ndarray:
    """One-pixel boundaries (one side only, as BSDS's ``seg2bmap``) of wavy Voronoi cells."""
    ys, xs = np.mgrid[:height, :width].astype(float)
    ys += 3 * np.sin(xs / 7 + generator.uniform(0, 6))
    centres = generator.uniform((0, 0), (height, width), (seeds, 2))
    cells = ((ys[..., None] - centres[:, 0]) ** 2 + (xs[..., None] - centres[:, 1]) ** 2).argmin(-1)
    edge = np.zeros((height, width), dtype=bool)
    edge[:, :-1] |= cells[:, :-1] != cells[:, 1:]
    edge[:-1] |= cells[:-1] != cells[1:]
    return edge


REALISTIC_KINDS = ["blurred", "doubled", "plateau", "shifted", "cluttered"]


def realistic_prediction(kind: str, gt: np.ndarray, generator) -> np.ndarray:
    """An edge probability map of ``kind`` (one of :data:`REALISTIC_KINDS`) for ``gt``."""
    line = gt.astype(float)
    if kind == "blurred":
        prob = scipy.ndimage.gaussian_filter(line, 1.5)
    elif kind == "doubled":
        prob = 0.9 * line + 0.8 * np.roll(line, (2, 2), (0, 1))
    elif kind == "plateau":
        prob = 0.9 * scipy.ndimage.binary_dilation(gt, np.ones((3, 3)))
    elif kind == "shifted":
        prob = scipy.ndimage.gaussian_filter(np.roll(line, (1, 1), (0, 1)), 1.0)
    else:  # cluttered
        clutter = segment_boundaries(*gt.shape, 12, generator) & (generator.random(gt.shape) > 0.3)
        prob = scipy.ndimage.gaussian_filter(0.8 * line + 0.5 * clutter, 1.0)
    prob = prob / prob.max() + 0.1 * generator.random(gt.shape)
    return np.clip(prob, 0.0, 1.0)


def _box(rng: np.random.Generator, size: tuple[int, int], largest: int) -> tuple[slice, slice]:
    height, width = rng.integers(2, largest, size=2)
    top, left = rng.integers(0, size[0] - height), rng.integers(0, size[1] - width)
    return slice(top, top + height), slice(left, left + width)


def instance_scene(
    rng: np.random.Generator, size: tuple[int, int] = (24, 36)
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A Cityscapes-like scene: ground-truth ids and semantics (persons and cars up to 12×12
    px, occluding each other; group regions; a void box) and a prediction (ids and per-pixel
    classes): most instances shifted by a pixel, some with the wrong class, and false
    positives, some on void. Every mask is below 185 px, so ``InstanceAPMetric``'s default
    score bins hold one pixel count each, as the script's scores."""
    true_ids = np.zeros(size, np.int64)
    semantic = np.zeros(size, np.int64)
    pred_ids = np.zeros(size, np.int64)
    pred_classes: dict[int, int] = {0: BACKGROUND}
    for instance in range(1, 9):
        box = _box(rng, size, 13)
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
        box = _box(rng, size, 7)
        true_ids[box], semantic[box] = 0, int(rng.choice([PERSON, CAR]))
    for extra in range(20, 23):  # false positives, some on void
        pred_ids[_box(rng, size, 9)] = extra
        pred_classes[extra] = int(rng.choice([PERSON, CAR]))
    box = _box(rng, size, 10)
    true_ids[box], semantic[box] = 0, VOID
    pred_semantic = np.vectorize(pred_classes.__getitem__)(pred_ids)
    return true_ids, semantic, pred_ids, pred_semantic


def vote_scene(
    rng: np.random.Generator, size: tuple[int, int] = (32, 48), noise: float = 0.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boxes of 4–8 px sides centred in 16-px cells (centroids 16 px apart), persons and
    cars, and a prediction: the centroid offsets plus Gaussian noise of ``noise`` px, the
    semantic label with one instance's class swapped, and a car predicted on an empty cell
    whose votes meet at its centre. Returns ids, semantics, offsets ``[2, H, W]`` and the
    predicted semantics."""
    ids = np.zeros(size, np.int64)
    semantic = np.zeros(size, np.int64)
    cells = [(row, column) for row in range(size[0] // 16) for column in range(size[1] // 16)]
    boxes = []
    for row, column in cells:
        height, width = rng.integers(4, 9, size=2)
        top, left = 16 * row + 8 - height // 2, 16 * column + 8 - width // 2
        boxes.append((slice(top, top + height), slice(left, left + width)))
    *instances, false_positive = boxes  # the last cell holds the false positive
    for instance, box in enumerate(instances, start=1):
        if instance == 1 or rng.random() < 0.75:
            ids[box], semantic[box] = instance, int(rng.choice([PERSON, CAR]))
    offsets = true_offsets(ids) + noise * rng.standard_normal((2, *size))
    offsets[:, ids == 0] = 0.0
    pred_semantic = semantic.copy()
    swapped = rng.choice(np.unique(ids[ids > 0]))
    pred_semantic[ids == swapped] = PERSON + CAR - semantic[ids == swapped][0]
    blob = np.zeros(size, np.int64)
    blob[false_positive] = 1
    pred_semantic[false_positive] = CAR
    offsets[:, blob == 1] = true_offsets(blob)[:, blob == 1]
    return ids, semantic, offsets, pred_semantic
