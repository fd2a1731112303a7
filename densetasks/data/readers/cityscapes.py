"""Cityscapes in its official layout: semseg (19 / 16 / 7 classes), depth, normals, instance.

::

    root/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png
    root/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png      8-bit label ids (0..33)
    root/gtFine/<split>/<city>/<stem>_gtFine_instanceIds.png   16-bit: id ≥ 1000 = instance
    root/disparity/<split>/<city>/<stem>_disparity.png          16-bit, d = (p − 1) / 256
    root/camera/<split>/<city>/<stem>_camera.json               baseline, fx, fy, u0, v0
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from densetasks.data.dataset import Sample, Transform
from densetasks.data.io import read_image, read_json
from densetasks.data.readers import _checks
from densetasks.data.readers._base import DatasetReader
from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import ConfigError, DataError

# (label id, name, train id of the 19-class set, category id 1..7 or 0 = void):
# cityscapesScripts ``helpers/labels.py``; ids 0..6 are void in every set.
_LABELS = (
    (7, "road", 0, 1), (8, "sidewalk", 1, 1), (9, "parking", 255, 1), (10, "rail track", 255, 1),
    (11, "building", 2, 2), (12, "wall", 3, 2), (13, "fence", 4, 2), (14, "guard rail", 255, 2),
    (15, "bridge", 255, 2), (16, "tunnel", 255, 2), (17, "pole", 5, 3), (18, "polegroup", 255, 3),
    (19, "traffic light", 6, 3), (20, "traffic sign", 7, 3), (21, "vegetation", 8, 4),
    (22, "terrain", 9, 4), (23, "sky", 10, 5), (24, "person", 11, 6), (25, "rider", 12, 6),
    (26, "car", 13, 7), (27, "truck", 14, 7), (28, "bus", 15, 7), (29, "caravan", 255, 7),
    (30, "trailer", 255, 7), (31, "train", 16, 7), (32, "motorcycle", 17, 7),
    (33, "bicycle", 18, 7),
)  # fmt: skip
_VOID_IDS = range(0, 7)
_CATEGORY_NAMES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
_NAMES_19 = tuple(name for _, name, train_id, _ in _LABELS if train_id != IGNORE_INDEX)
_NAMES_16 = tuple(name for name in _NAMES_19 if name not in ("terrain", "truck", "train"))
"""The 16 classes shared with SYNTHIA (the 19 without terrain, truck and train), as Lopes,
Vu & de Charette (WACV 2023) use them."""
TINY_SIZE = (128, 256)
"""Tiny Cityscapes of Kendall, Gal & Cipolla (CVPR 2018): every frame resized to 128×256."""
FULL_WIDTH = 2048
"""The width of the original frames, the one the camera files' focal lengths refer to."""
NOMINAL_BASELINE, NOMINAL_FX = 0.209313, 2262.52
"""Stereo baseline (m) and focal length (px at full width) of the camera files of most
cities; Kendall et al. (CVPR 2018, Sec. 5.1) round the baseline to 22 cm. They set the depth
task's ``disparity_scale``; a frame whose own camera differs by ε has its disparity errors
scaled by about 1 + ε."""
MAX_DEPTH = 80.0
"""Depth labels beyond 80 m are left out of the depth loss and metrics: SGM disparities below
``NOMINAL_BASELINE · NOMINAL_FX / 80 ≈ 5.9`` px are mostly matching noise (one step of the
PNG, 1/256 px, is ~1.2e5 m), and the depth head stops at 80 m (``depth.far``)."""


def _class_table(num_classes: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Label id (0..33) -> class of the 19-, 16- or 7-class set (255 = ignore)."""
    table = np.full(256, -1, dtype=np.int64)
    table[list(_VOID_IDS)] = IGNORE_INDEX
    table[IGNORE_INDEX] = IGNORE_INDEX
    names = {19: _NAMES_19, 16: _NAMES_16, 7: _CATEGORY_NAMES}.get(num_classes)
    if names is None:
        raise ConfigError(
            f"data.options.num_classes: cityscapes has 19, 16 or 7, got {num_classes}"
        )
    for label_id, name, _, category in _LABELS:
        if num_classes == 7:
            table[label_id] = category - 1
        else:
            table[label_id] = names.index(name) if name in names else IGNORE_INDEX
    return table, names


class Cityscapes(DatasetReader):
    """Cityscapes fine annotations with stereo depth.

    Depth is ``baseline · fx / disparity`` (metres; 0 where the disparity PNG holds 0 or 1,
    i.e. no match); :func:`inverse_depth` gives its inverse. Labels keep their far values, but
    the depth task gets ``max_depth`` 80 m (:data:`MAX_DEPTH`) and the ``disparity_scale`` of
    the nominal camera at the delivered width (:func:`depth_task_options`), both overridable
    under ``tasks.depth``. ``num_classes`` picks the
    19 train classes, the 16 shared with SYNTHIA or the 7 categories. ``tiny=True`` resizes
    every frame to 128×256 (Kendall, Gal & Cipolla, CVPR 2018): image bilinear, labels and
    depth nearest, intrinsics scaled. ``normals_from_depth=True`` adds normals from the stereo
    depth (Lopes, Vu & de Charette, WACV 2023).
    Instance ids are the ``instanceIds`` values ≥ 1000 (``label id · 1000 + k``), 0 elsewhere.
    """

    format_name = "cityscapes"
    root_holds = "the Cityscapes root"
    tasks = ("semseg", "depth", "instance", "normals")
    splits = ("train", "val", "test")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        transform: Transform | None = None,
        num_classes: int = 19,
        tiny: bool = False,
        normals_from_depth: bool = False,
    ) -> None:
        available = type(self).tasks if normals_from_depth else type(self).tasks[:3]
        super().__init__(root, split, tasks, transform, available)
        self.tiny = tiny
        self._table, names = _class_table(num_classes)
        self.set_class_names(semseg=names)
        if "depth" in self.tasks:
            self.task_options["depth"] = depth_task_options(tiny)
        image_root = _checks.require_dir(
            self.root / "leftImg8bit" / split, "leftImg8bit/<split>/<city>/"
        )
        images = sorted(image_root.glob("*/*_leftImg8bit.png"))
        if not images:
            raise DataError(f"{image_root}: no <city>/*_leftImg8bit.png images")
        self.names = [path.name[: -len("_leftImg8bit.png")] for path in images]
        relative = [
            Path(path.parent.name) / name for path, name in zip(images, self.names, strict=True)
        ]
        self._files = {"image": images}
        for key, folder, suffix in self._needed_files():
            self._files[key] = _checks.files_for_names(
                self.root / folder / split, [str(name) for name in relative], (suffix,), key
            )

    def _needed_files(self) -> list[tuple[str, str, str]]:
        needed = []
        if "semseg" in self.tasks:
            needed.append(("semseg", "gtFine", "_gtFine_labelIds.png"))
        if "instance" in self.tasks:
            needed.append(("instance", "gtFine", "_gtFine_instanceIds.png"))
        if "depth" in self.tasks or "normals" in self.tasks:
            needed.append(("disparity", "disparity", "_disparity.png"))
            needed.append(("camera", "camera", "_camera.json"))
        return needed

    def load(self, index: int) -> Sample:
        files = {key: paths[index] for key, paths in self._files.items()}
        image = read_image(files["image"])
        size = tuple(image.shape[-2:])
        labels: dict[str, torch.Tensor] = {}
        if "semseg" in self.tasks:
            ids = _checks.read_class_png(files["semseg"])
            labels["semseg"] = _checks.remap_classes(ids, self._table, files["semseg"])
        if "instance" in self.tasks:
            ids = _checks.read_png16(files["instance"])
            labels["instance"] = torch.from_numpy(np.where(ids >= 1000, ids, 0))
        intrinsics = None
        if "camera" in files:
            baseline, intrinsics = _read_camera(files["camera"])
            raw = _checks.read_png16(files["disparity"])
            inverse = inverse_depth(raw, baseline, float(intrinsics[0, 0]))
            labels["depth"] = torch.where(inverse > 0, 1.0 / inverse.clamp_min(1e-12), 0.0)[None]
        for key, label in labels.items():
            _checks.check_same_size(label, image, files[key if key != "depth" else "disparity"])
        if self.tiny:
            image = F.interpolate(image[None], size=TINY_SIZE, mode="bilinear", antialias=True)[0]
            labels = {key: _resize_nearest(label, TINY_SIZE) for key, label in labels.items()}
        if intrinsics is not None:
            intrinsics = _checks.intrinsics_for_size(intrinsics, size, tuple(image.shape[-2:]))
        if "normals" in self.tasks:
            labels["normals"] = _checks.derive_normals(
                labels["depth"], intrinsics, files["disparity"]
            )
        sample = self.new_sample(index, image, intrinsics)
        sample.update({task: labels[task] for task in self.tasks})
        return sample


def depth_task_options(tiny: bool) -> dict[str, float]:
    """What the depth task should know of Cityscapes: labels beyond 80 m are noise, and
    disparity (px at the delivered width, scaled down with Tiny Cityscapes as Kendall et al.,
    CVPR 2018, Sec. 5.1, scale the labels) is ``baseline · fx / depth`` of the nominal camera."""
    width = TINY_SIZE[1] if tiny else FULL_WIDTH
    scale = NOMINAL_BASELINE * NOMINAL_FX * width / FULL_WIDTH
    return {"max_depth": MAX_DEPTH, "disparity_scale": scale}


def inverse_depth(raw_disparity: np.ndarray, baseline: float, fx: float) -> torch.Tensor:
    """Inverse depth (1/m) ``[H, W]`` of a Cityscapes disparity PNG's raw values.

    Disparity is ``(p − 1) / 256`` px for ``p > 0`` and depth ``baseline · fx / disparity``
    (cityscapesScripts README); ``p ≤ 1`` (no match, or zero disparity) gives 0 = invalid.
    """
    disparity = np.where(raw_disparity > 1, (raw_disparity.astype(np.float64) - 1.0) / 256.0, 0.0)
    return torch.from_numpy((disparity / (baseline * fx)).astype(np.float32))


def _read_camera(path: Path) -> tuple[float, torch.Tensor]:
    """Stereo baseline (m) and the ``[3, 3]`` intrinsics of a ``*_camera.json``."""
    camera = read_json(path)
    try:
        baseline = float(camera["extrinsic"]["baseline"])
        fx, fy, u0, v0 = (float(camera["intrinsic"][key]) for key in ("fx", "fy", "u0", "v0"))
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(
            f"{path}: expected extrinsic.baseline and intrinsic.fx/fy/u0/v0 ({error})"
        ) from None
    if baseline <= 0 or fx <= 0:
        raise DataError(f"{path}: baseline and fx must be positive, got {baseline}, {fx}")
    return baseline, _checks.pinhole(fx, fy, u0, v0)


def _resize_nearest(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of ``[H, W]`` or ``[C, H, W]`` labels, values unchanged."""
    batched = label[None] if label.ndim == 3 else label[None, None]
    resized = F.interpolate(batched.double(), size=size, mode="nearest-exact")
    resized = resized.to(label.dtype)
    return resized[0] if label.ndim == 3 else resized[0, 0]
