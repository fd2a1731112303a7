"""NYUD-v2 in the mtan / LibMTL ``.npy`` layout (288×384, 13 classes).

::

    root/{train,val}/image/<i>.npy    float [H, W, 3] in [0, 1]
    root/{train,val}/label/<i>.npy    float/int [H, W], 0..12, -1 = ignore
    root/{train,val}/depth/<i>.npy    float [H, W, 1] or [H, W] metres, 0 = invalid
    root/{train,val}/normal/<i>.npy   float [H, W, 3] in [-1, 1], zero vector = invalid
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from densetasks.data.dataset import Sample, Transform
from densetasks.data.io import read_npy
from densetasks.data.readers import _checks
from densetasks.data.readers._base import DatasetReader
from densetasks.data.readers._nyud import CLASS_NAMES_13, kinect_intrinsics
from densetasks.data.readers.nyud_mt import _read_depth
from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import DataError

_FOLDERS = {"image": "image", "semseg": "label", "depth": "depth", "normals": "normal"}


class NYUDNpy(DatasetReader):
    """NYUD-v2 as mtan and LibMTL store it: semseg (13 classes), depth, normals.

    Samples are named by their index (the file stem). ``normals_signs`` converts the stored
    normal components to the OpenCV camera frame (default: taken as already in it).
    Intrinsics are the Kinect matrix scaled from 480×640 to the stored size.
    """

    format_name = "nyud_npy"
    root_holds = "the nyud_npy root, holding train/ and val/"
    tasks = ("semseg", "depth", "normals")
    splits = ("train", "val")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        transform: Transform | None = None,
        normals_signs: Sequence[float] = (1, 1, 1),
    ) -> None:
        super().__init__(root, split, tasks, transform)
        split_root = _checks.require_dir(self.root / split, f"the nyud_npy {split!r} split")
        self.normals_signs = _checks.check_signs(normals_signs, "normals_signs")
        self.set_class_names(semseg=CLASS_NAMES_13)
        image_folder = _checks.require_dir(split_root / "image", "image/<i>.npy")
        self.names = sorted((path.stem for path in image_folder.glob("*.npy")), key=_index_order)
        if not self.names:
            raise DataError(f"{image_folder}: no image .npy files")
        self._files = {
            key: _checks.files_for_names(split_root / folder, self.names, (".npy",), folder)
            for key, folder in _FOLDERS.items()
            if key == "image" or key in self.tasks
        }
        for key, paths in self._files.items():
            folder = split_root / _FOLDERS[key]
            stray = len(list(folder.glob("*.npy"))) - len(paths)
            if stray:
                raise DataError(f"{folder}: {stray} more files than images in {image_folder}")

    def load(self, index: int) -> Sample:
        image_path = self._files["image"][index]
        image = _read_image(image_path)
        sample = self.new_sample(index, image, kinect_intrinsics(tuple(image.shape[-2:])))
        for task in self.tasks:
            path = self._files[task][index]
            if task == "semseg":
                label = _read_label(path)
            elif task == "depth":
                label = _read_depth(path)
            else:
                label = _checks.normals_to_opencv(read_npy(path), self.normals_signs, path)
            sample[task] = _checks.check_same_size(label, image, path)
        return sample


def _index_order(stem: str) -> tuple[int, str]:
    """Numeric stems in numeric order (``2`` before ``10``), others after them by name."""
    return (int(stem), "") if stem.isdigit() else (1 << 62, stem)


def _read_image(path: Path) -> torch.Tensor:
    array = read_npy(path)
    if array.ndim != 3 or array.shape[2] != 3 or not np.issubdtype(array.dtype, np.floating):
        raise DataError(
            f"{path}: image must be float [H, W, 3], got {array.dtype} {list(array.shape)}"
        )
    if array.min(initial=0.0) < 0.0 or array.max(initial=0.0) > 1.0:
        raise DataError(f"{path}: image values must be in [0, 1] (mtan stores them so)")
    return torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1).contiguous()


def _read_label(path: Path) -> torch.Tensor:
    """mtan labels: float class ids 0..12 and -1 for unlabelled (-> ``IGNORE_INDEX``)."""
    values = read_npy(path)
    if values.ndim != 2:
        raise DataError(f"{path}: label must be [H, W], got shape {list(values.shape)}")
    if not np.all(values == np.round(values)):
        raise DataError(f"{path}: label values must be whole numbers")
    ids = values.astype(np.int64)
    if ids.size and (ids.min() < -1 or ids.max() >= len(CLASS_NAMES_13)):
        raise DataError(f"{path}: label values must be in -1..12, got {ids.min()}..{ids.max()}")
    return torch.from_numpy(np.where(ids < 0, IGNORE_INDEX, ids))
