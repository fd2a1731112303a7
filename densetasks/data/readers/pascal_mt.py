"""PASCAL-Context in the multi-task layout of ASTMT / MTL-PyTorch / ATRC (``PASCAL_MT``).

::

    root/JPEGImages/<name>.jpg
    root/semseg/pascal-context/<name>.png    8-bit, 0..20 (VOC classes), 255 = ignore
                                             (or semseg/VOC12/, option semseg_folder)
    root/human_parts/<name>.mat              Pascal-Part ``anno`` struct (see below)
    root/normals_distill/<name>.png          RGB, n = 2 · p / 255 − 1
    root/sal_distill/<name>.png              8-bit, salient where p > 0.5 · 255
    root/pascal-context/trainval/<name>.mat  ``LabelMap`` [H, W] (edges are derived from it)
    root/ImageSets/Context/{train,val}.txt

Pascal-Part ``anno`` (Chen et al. 2014): ``anno.objects`` is a struct array with fields
``class``, ``class_ind`` (15 = person), ``mask`` ([H, W] 0/1) and ``parts``, a struct array
with ``part_name`` (e.g. ``"luarm"``) and ``mask``.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch

from densetasks.data.class_lists import PASCAL_PART_NAMES, PASCAL_SEMSEG_NAMES
from densetasks.data.dataset import Sample, Transform
from densetasks.data.folder import read_split
from densetasks.data.io import read_image, read_png_array
from densetasks.data.readers import _checks
from densetasks.data.readers._base import DatasetReader
from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import DataError

PERSON_CLASS = 15
# Pascal-Part person parts -> the 6 parts of ASTMT / ATRC (``db_info/pascal_part.json``).
_PART_OF = {
    **dict.fromkeys(("hair", "head", "lear", "lebrow", "leye", "mouth", "nose", "rear",
                     "rebrow", "reye"), 1),
    "neck": 2, "torso": 2, "luarm": 3, "ruarm": 3,
    **dict.fromkeys(("lhand", "rhand", "llarm", "rlarm"), 4),
    "luleg": 5, "ruleg": 5,
    **dict.fromkeys(("lfoot", "rfoot", "llleg", "rlleg"), 6),
}  # fmt: skip
_SEMSEG_TABLE = _checks.identity_table(len(PASCAL_SEMSEG_NAMES))
_FILES = {
    "semseg": (None, ".png"),
    "parts": ("human_parts", ".mat"),
    "normals": ("normals_distill", ".png"),
    "saliency": ("sal_distill", ".png"),
    "edges": ("pascal-context/trainval", ".mat"),
}


class PascalMultiTask(DatasetReader):
    """PASCAL-Context multi-task: semseg (21), parts (7), normals, saliency, edges.

    Human parts exist only for images with a ``human_parts/<name>.mat`` holding a person
    with annotated parts; elsewhere the sample has no ``parts`` key (not supervised). Pixels
    of persons without part annotations are ignored (255). Edges are the non-zero pixels of
    the 4-neighbour Laplacian of ``LabelMap``, thinned to one pixel (as MTL-PyTorch does with
    OpenCV and scikit-image; here with Zhang–Suen thinning). ``normals_signs`` converts the
    distilled normals' axes to the OpenCV camera frame (default: taken as already in it).
    Intrinsics are not known.
    """

    format_name = "pascal_mt"
    root_holds = "the PASCAL_MT root"
    tasks = ("semseg", "parts", "normals", "saliency", "edges")
    splits = ("train", "val")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        transform: Transform | None = None,
        semseg_folder: str = "pascal-context",
        normals_signs: Sequence[float] = (1, 1, 1),
    ) -> None:
        super().__init__(root, split, tasks, transform)
        self.normals_signs = _checks.check_signs(normals_signs, "normals_signs")
        self.set_class_names(semseg=PASCAL_SEMSEG_NAMES, parts=PASCAL_PART_NAMES)
        self.names = read_split(self.root / "ImageSets" / "Context" / f"{split}.txt")
        self._images = _checks.files_for_names(
            self.root / "JPEGImages", self.names, (".jpg",), "image"
        )
        self._labels: dict[str, list[Path | None]] = {}
        for task in self.tasks:
            folder, suffix = _FILES[task]
            folder_path = self.root / (folder or f"semseg/{semseg_folder}")
            if task == "parts":
                parts_dir = _checks.require_dir(folder_path, "human_parts/<name>.mat")
                files = [parts_dir / f"{name}.mat" for name in self.names]
                self._labels[task] = [path if path.is_file() else None for path in files]
            else:
                self._labels[task] = list(
                    _checks.files_for_names(folder_path, self.names, (suffix,), task)
                )

    def load(self, index: int) -> Sample:
        image = read_image(self._images[index])
        sample = self.new_sample(index, image)
        for task in self.tasks:
            path = self._labels[task][index]
            label = None if path is None else self._read(task, path)
            if label is not None:
                sample[task] = _checks.check_same_size(label, image, path)
        return sample

    def _read(self, task: str, path: Path) -> torch.Tensor | None:
        if task == "semseg":
            return _checks.remap_classes(_checks.read_class_png(path), _SEMSEG_TABLE, path)
        if task == "parts":
            return read_human_parts(path)
        if task == "normals":
            vectors = read_png_array(path, channels=3).astype(np.float32) * (2.0 / 255.0) - 1.0
            return _checks.normals_to_opencv(vectors, self.normals_signs, path)
        if task == "saliency":
            return torch.from_numpy((_checks.read_class_png(path) > 0.5 * 255).astype(np.uint8))
        return edges_from_label_map(_mat_variable(path, "LabelMap"))


def read_human_parts(path: Path) -> torch.Tensor | None:
    """The 7-class part map (int64 ``[H, W]``) of a Pascal-Part file; None without parts."""
    objects = _mat_variable(path, "anno")["objects"][0, 0]
    target = None
    unannotated = None
    for person in (
        obj for obj in objects.ravel() if int(obj["class_ind"].squeeze()) == PERSON_CLASS
    ):
        mask = person["mask"].astype(bool)
        if target is None:
            target = np.zeros(mask.shape, dtype=np.int64)
            unannotated = np.zeros(mask.shape, dtype=bool)
        parts = person["parts"].ravel()
        if parts.size == 0:
            unannotated |= mask
        for part in parts:
            name = str(part["part_name"].squeeze())
            if name not in _PART_OF:
                raise DataError(f"{path}: unknown person part {name!r}")
            target[part["mask"].astype(bool)] = _PART_OF[name]
    if target is None or not target.any():
        return None
    target[unannotated & (target == 0)] = IGNORE_INDEX
    return torch.from_numpy(target)


def edges_from_label_map(label_map: np.ndarray) -> torch.Tensor:
    """Edges (uint8 ``[H, W]`` 0/1) where the 4-neighbour Laplacian of the map is non-zero,
    thinned to one pixel wide (MTL-PyTorch ``PASCAL_MT._load_edge``; border reflected as
    OpenCV's default ``BORDER_REFLECT_101``)."""
    values = label_map.astype(np.float64)
    padded = np.pad(values, 1, mode="reflect")
    laplacian = (
        padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:] - 4 * values
    )
    return torch.from_numpy(thin(laplacian != 0).astype(np.uint8))


def thin(mask: np.ndarray) -> np.ndarray:
    """Zhang–Suen thinning (CACM 1984) of a boolean ``[H, W]`` mask to 1-pixel-wide lines.

    The border is replicated, so lines that run into the image border keep reaching it.
    """
    skeleton = mask.astype(bool)
    while True:
        changed = False
        for step in (0, 1):
            p = np.pad(skeleton, 1, mode="edge")
            # neighbours P2..P9 clockwise from north
            n = [
                p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:],
                p[2:, 1:-1], p[2:, :-2], p[1:-1, :-2], p[:-2, :-2],
            ]  # fmt: skip
            count = sum(neighbour.astype(np.int8) for neighbour in n)
            transitions = sum((~n[i] & n[(i + 1) % 8]).astype(np.int8) for i in range(8))
            if step == 0:
                side = ~(n[0] & n[2] & n[4]) & ~(n[2] & n[4] & n[6])
            else:
                side = ~(n[0] & n[2] & n[6]) & ~(n[0] & n[4] & n[6])
            remove = p[1:-1, 1:-1] & (count >= 2) & (count <= 6) & (transitions == 1) & side
            if remove.any():
                skeleton = skeleton & ~remove
                changed = True
        if not changed:
            return skeleton


def _mat_variable(path: Path, key: str) -> Any:
    try:
        content = scipy.io.loadmat(path)
    except (OSError, ValueError, NotImplementedError) as error:
        raise DataError(f"{path}: cannot read .mat file ({error})") from None
    if key not in content:
        raise DataError(f"{path}: no variable {key!r} in the .mat file")
    return content[key]
