"""NYUD-v2 from the official ``nyu_depth_v2_labeled.mat`` (1449 frames, 640×480).

The file is MATLAB v7.3, i.e. HDF5; h5py sees MATLAB's arrays transposed:
``images`` ``[N, 3, W, H]`` uint8, ``depths`` / ``rawDepths`` ``[N, W, H]`` float metres,
``labels`` ``[N, W, H]`` uint16 (0 = unlabelled, 1..894 = the raw classes),
``instances`` ``[N, W, H]`` uint8 (instance number within its class). It is opened lazily,
once per process (so it works with DataLoader workers), and one frame is read per access.

The 894 raw classes reach the usual sets through the mapping files every NYUD-v2 toolkit
uses (not shipped: download them beside the ``.mat``, e.g. from ankurhanda/nyuv2-meta-data):

``classMapping40.mat``  ``mapClass`` ``[1, 894]``: raw class -> 1..40 (Gupta et al. 2013)
``class13Mapping.mat``  ``classMapping13`` struct, first field ``[1, 40]``: 40 -> 1..13
                         (Couprie et al. 2013)
``splits.mat``          ``trainNdxs`` (795) and ``testNdxs`` (654), 1-based frame numbers
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io
import torch

from densetasks.data.dataset import Sample, Transform
from densetasks.data.readers import _checks
from densetasks.data.readers._base import DatasetReader
from densetasks.data.readers._nyud import CLASS_NAMES_13, CLASS_NAMES_40, KINECT_INTRINSICS
from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import ConfigError, DataError

_CLASS_NAMES = {40: CLASS_NAMES_40, 13: CLASS_NAMES_13}
_SPLIT_KEYS = {"train": "trainNdxs", "test": "testNdxs", "val": "testNdxs"}
_MAX_INSTANCES_PER_CLASS = 256


class NYUDLabelledMat(DatasetReader):
    """The official labelled NYUD-v2 file: semseg (40 or 13 classes), depth, normals, instance.

    ``split`` is ``train`` (795 frames), ``test`` (654; ``val`` is the same frames, as the
    multi-task literature calls them) or ``all`` (every frame, no ``splits.mat`` needed).
    Options: ``num_classes`` 40 or 13; ``raw_depth=True`` reads ``rawDepths`` (holes = 0)
    instead of the in-painted ``depths``; ``mapping40`` / ``mapping13`` / ``splits_file``
    paths (default: beside the ``.mat``). Normals are computed from the depth (Lopes, Vu &
    de Charette, WACV 2023, App. B.1.1) with the Kinect intrinsics. Instance ids are
    ``class · 256 + instance number``, 0 where unlabelled.
    """

    format_name = "nyud_mat"
    root_holds = "the folder of nyu_depth_v2_labeled.mat"
    tasks = ("semseg", "depth", "normals", "instance")
    splits = ("train", "val", "test", "all")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        transform: Transform | None = None,
        file: str = "nyu_depth_v2_labeled.mat",
        num_classes: int = 40,
        raw_depth: bool = False,
        mapping40: str | Path | None = None,
        mapping13: str | Path | None = None,
        splits_file: str | Path | None = None,
    ) -> None:
        super().__init__(root, split, tasks, transform)
        if num_classes not in _CLASS_NAMES:
            raise ConfigError(f"data.options.num_classes: nyud_mat has 40 or 13, got {num_classes}")
        self.path = self.root / file
        self.depth_key = "rawDepths" if raw_depth else "depths"
        frame_count = self._check_file()
        self.indices = (
            list(range(frame_count))
            if split == "all"
            else _read_split(Path(splits_file or self.root / "splits.mat"), split, frame_count)
        )
        self.names = [f"{index + 1:04d}" for index in self.indices]
        if "semseg" in self.tasks:
            self._class_table = _class_table(
                num_classes,
                Path(mapping40 or self.root / "classMapping40.mat"),
                Path(mapping13 or self.root / "class13Mapping.mat"),
            )
            self.set_class_names(semseg=_CLASS_NAMES[num_classes])
        self._file: h5py.File | None = None

    def _check_file(self) -> int:
        """Open the file once to check its datasets agree; the number of frames."""
        if not self.path.is_file():
            raise DataError(f"{self.path}: file not found (expected nyu_depth_v2_labeled.mat)")
        try:
            with h5py.File(self.path, "r") as handle:
                shapes = {key: handle[key].shape for key in _needed_keys(self.depth_key)}
        except OSError as error:
            raise DataError(f"{self.path}: not a MATLAB v7.3 (HDF5) file ({error})") from None
        except KeyError as error:
            raise DataError(f"{self.path}: missing dataset {error}") from None
        count, channels, width, height = shapes["images"]
        if channels != 3:
            raise DataError(
                f"{self.path}: images must be [N, 3, W, H], got {list(shapes['images'])}"
            )
        for key, shape in shapes.items():
            if key != "images" and tuple(shape) != (count, width, height):
                raise DataError(
                    f"{self.path}: {key} must be [N, W, H] = {[count, width, height]}, "
                    f"got {list(shape)}"
                )
        return count

    def load(self, index: int) -> Sample:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        frame = self.indices[index]
        image = torch.from_numpy(self._file["images"][frame].transpose(0, 2, 1) / 255.0).float()
        intrinsics = KINECT_INTRINSICS.clone()
        sample = self.new_sample(index, image, intrinsics)
        raw_labels = self._file["labels"][frame].T.astype(np.int64)
        if "semseg" in self.tasks:
            sample["semseg"] = _checks.remap_classes(raw_labels, self._class_table, self.path)
        if "depth" in self.tasks or "normals" in self.tasks:
            depth_values = self._file[self.depth_key][frame].T.astype(np.float32)
            depth = torch.from_numpy(np.where(depth_values > 0, depth_values, 0.0))[None]
            if "depth" in self.tasks:
                sample["depth"] = depth
            if "normals" in self.tasks:
                sample["normals"] = _checks.derive_normals(depth, intrinsics, self.path)
        if "instance" in self.tasks:
            numbers = self._file["instances"][frame].T.astype(np.int64)
            instance = np.where(raw_labels > 0, raw_labels * _MAX_INSTANCES_PER_CLASS + numbers, 0)
            sample["instance"] = torch.from_numpy(instance)
        return sample

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for DataLoader workers without the open HDF5 handle (reopened lazily)."""
        state = dict(self.__dict__)
        state["_file"] = None
        return state


def _needed_keys(depth_key: str) -> tuple[str, ...]:
    return ("images", "labels", "instances", depth_key)


def _read_split(path: Path, split: str, frame_count: int) -> list[int]:
    """0-based frame indices of ``split`` from the official ``splits.mat``."""
    key = _SPLIT_KEYS[split]
    numbers = np.asarray(_load_mat(path, key)[key]).ravel().astype(np.int64)
    if numbers.size == 0 or numbers.min() < 1 or numbers.max() > frame_count:
        raise DataError(f"{path}: {key} must hold frame numbers in 1..{frame_count}")
    return (numbers - 1).tolist()


def _class_table(num_classes: int, mapping40: Path, mapping13: Path) -> np.ndarray:
    """Raw class (0..894) -> training class (0..K-1) or ``IGNORE_INDEX``, from the mapping files."""
    to_40 = np.asarray(_load_mat(mapping40, "mapClass")["mapClass"]).ravel().astype(np.int64)
    if to_40.size == 0 or to_40.min() < 0 or to_40.max() > 40:
        raise DataError(f"{mapping40}: mapClass values must be in 0..40")
    raw_to_class = np.concatenate([[0], to_40])  # raw 0 (unlabelled) stays 0
    if num_classes == 13:
        struct = _load_mat(mapping13, "classMapping13")["classMapping13"]
        to_13 = np.asarray(struct[0, 0][0]).ravel().astype(np.int64)
        if to_13.size != 40 or to_13.min() < 0 or to_13.max() > 13:
            raise DataError(
                f"{mapping13}: classMapping13's first field must map 40 classes to 0..13"
            )
        raw_to_class = np.concatenate([[0], to_13])[raw_to_class]
    return np.where(raw_to_class > 0, raw_to_class - 1, IGNORE_INDEX)


def _load_mat(path: Path, key: str) -> dict[str, Any]:
    """A MATLAB (v5) ``.mat`` file that must hold ``key``."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected a .mat holding {key!r})")
    try:
        content = scipy.io.loadmat(path)
    except (OSError, ValueError, NotImplementedError) as error:
        raise DataError(f"{path}: cannot read .mat file ({error})") from None
    if key not in content:
        variables = sorted(name for name in content if not name.startswith("__"))
        raise DataError(f"{path}: no variable {key!r} (has {variables})")
    return content
