"""NYUD-v2 in the ATRC / Multi-Task-Learning-PyTorch ``NYUD_MT`` layout (40 classes).

::

    root/
      images/<name>.jpg
      segmentation/<name>.png    8-bit, 1..40 = class, 0 = unlabelled (-> ignore)
      depth/<name>.npy           float [H, W] metres, 0 = invalid
      normals/<name>.npy|.png    float [H, W, 3] in [-1, 1], or RGB (n + 1) / 2 · 255
      edge/<name>.npy|.png       float/uint 0/1 (PNG: any non-zero value is an edge)
      gt_sets/{train,val}.txt    one name per line
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from densetasks.data.dataset import Sample, Transform
from densetasks.data.folder import read_split
from densetasks.data.io import read_image, read_npy, read_png_array
from densetasks.data.readers import _checks
from densetasks.data.readers._base import DatasetReader
from densetasks.data.readers._nyud import CLASS_NAMES_40, kinect_intrinsics
from densetasks.errors import DataError

_LABEL_FOLDERS = {
    "semseg": ("segmentation", (".png",)),
    "depth": ("depth", (".npy",)),
    "normals": ("normals", (".npy", ".png")),
    "edges": ("edge", (".npy", ".png")),
}
_SEMSEG_TABLE = _checks.shift_table(len(CLASS_NAMES_40))


class NYUDMultiTask(DatasetReader):
    """NYUD-v2 as ATRC and MTL-PyTorch store it: semseg (40), depth, normals, edges.

    Options: ``normals_signs`` multiplies the stored normal components to reach the OpenCV
    camera frame (default ``(1, 1, 1)``: the files are taken as already in it);
    ``normals_from_depth=True`` computes normals from depth (Lopes, Vu & de Charette,
    WACV 2023, App. B.1.1) instead of reading ``normals/``; ``crop_origin=(top, left)`` says
    the images are crops of the 640×480 Kinect frame (else they are taken as resized whole
    frames) for the intrinsics.
    """

    format_name = "nyud_mt"
    root_holds = "the NYUD_MT dataset root"
    tasks = ("semseg", "depth", "normals", "edges")
    splits = ("train", "val")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        transform: Transform | None = None,
        normals_signs: Sequence[float] = (1, 1, 1),
        normals_from_depth: bool = False,
        crop_origin: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(root, split, tasks, transform)
        self.normals_signs = _checks.check_signs(normals_signs, "normals_signs")
        self.normals_from_depth = normals_from_depth
        self.crop_origin = None if crop_origin is None else tuple(crop_origin)
        self.set_class_names(semseg=CLASS_NAMES_40)
        self.names = read_split(self.root / "gt_sets" / f"{split}.txt")
        self._images = _checks.files_for_names(self.root / "images", self.names, (".jpg",), "image")
        self._labels = {
            task: _checks.files_for_names(self.root / folder, self.names, suffixes, task)
            for task, (folder, suffixes) in _LABEL_FOLDERS.items()
            if task in self._files_needed()
        }

    def _files_needed(self) -> set[str]:
        needed = set(self.tasks)
        if "normals" in needed and self.normals_from_depth:
            needed.discard("normals")
            needed.add("depth")
        return needed

    def load(self, index: int) -> Sample:
        image = read_image(self._images[index])
        intrinsics = kinect_intrinsics(tuple(image.shape[-2:]), self.crop_origin)
        sample = self.new_sample(index, image, intrinsics)
        labels = {task: self._read(task, paths[index]) for task, paths in self._labels.items()}
        for task, label in labels.items():
            _checks.check_same_size(label, image, self._labels[task][index])
        if "normals" in self.tasks and self.normals_from_depth:
            labels["normals"] = _checks.derive_normals(
                labels["depth"], intrinsics, self._labels["depth"][index]
            )
        sample.update({task: labels[task] for task in self.tasks})
        return sample

    def _read(self, task: str, path: Path) -> torch.Tensor:
        if task == "semseg":
            return _checks.remap_classes(_checks.read_class_png(path), _SEMSEG_TABLE, path)
        if task == "depth":
            return _read_depth(path)
        if task == "normals":
            return _read_normals(path, self.normals_signs)
        return _read_edges(path)


def _read_depth(path: Path) -> torch.Tensor:
    depth = read_npy(path)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise DataError(
            f"{path}: depth must be float [H, W] metres, got {depth.dtype} {list(depth.shape)}"
        )
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
    return torch.from_numpy(depth)[None]


def _read_normals(path: Path, signs: Sequence[float]) -> torch.Tensor:
    if path.suffix == ".png":
        vectors = read_png_array(path, channels=3).astype(np.float32) / 255.0 * 2.0 - 1.0
    else:
        vectors = read_npy(path)
    return _checks.normals_to_opencv(vectors, signs, path)


def _read_edges(path: Path) -> torch.Tensor:
    values = read_png_array(path) if path.suffix == ".png" else read_npy(path)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    if values.ndim != 2:
        raise DataError(f"{path}: edges must be [H, W], got shape {list(values.shape)}")
    if path.suffix == ".npy" and not np.isin(values, (0, 1)).all():
        raise DataError(f"{path}: edge .npy values must be 0 or 1")
    return torch.from_numpy((values > 0).astype(np.uint8))
