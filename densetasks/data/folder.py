"""The generic folder format: one folder of images and one folder per task (``docs/data.md``).

::

    root/
      dataset.json            {"format": "densetasks-folder", "version": 1, "tasks": [...],
                               "task_options": {"semseg": {"num_classes": K, "class_names": [...]}}}
      images/<name>.png|.jpg  RGB
      <task>/<name>.<suffix>  one folder per task, encoded by the task's label kind:
        MASK (semseg, parts)   .png 8-bit class ids, 255 = ignore
        BINARY (edges, ...)    .png 8-bit 0 / 1, 255 = ignore
        DEPTH                  .npy float32 [H, W] metres, 0 = invalid, or
                               .png 16-bit millimetres, 0 = invalid
        NORMALS                .npy float32 [H, W, 3] unit vectors, zero vector = invalid, or
                               .png RGB (n + 1) / 2 · 255, (128, 128, 128) = invalid
        INSTANCE               .png 16-bit ids, 0 = no instance
        REGRESSION             .npy float32 [C, H, W] (or [H, W], one channel), NaN = invalid
      intrinsics/<name>.json  {"K": 3x3}   or one intrinsics.json for every image
      splits/<split>.txt      one name per line

Any task in the label-kind table the caller gives (``label_kinds``: the registered tasks'
``Task.label_kind``, built above this package by ``densetasks.tasks.registry.label_kinds``) has
a folder: its kind picks the encoding, so a task defined outside the library needs nothing
here.
A sample lacking a task's file simply lacks that key. Everything that can be checked without
reading every file is checked when the dataset is opened; each file is checked when loaded.
"""

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densetasks.data.dataset import DenseDataset, Sample, Transform
from densetasks.data.io import (
    read_image,
    read_json,
    read_npy,
    read_png_array,
    write_image,
    write_json,
    write_npy,
    write_png_array,
    write_text,
)
from densetasks.data.sample import IGNORE_INDEX, LabelKind
from densetasks.errors import DataError

FORMAT_NAME = "densetasks-folder"
FORMAT_VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NORMALS_PNG_INVALID = (128, 128, 128)
"""The colour of an invalid normal in a PNG: it decodes to (almost) the zero vector."""

TaskOptions = dict[str, Any]
_Reader = Callable[[Path, TaskOptions], torch.Tensor]
_Writer = Callable[[Path, torch.Tensor, TaskOptions], None]


@dataclass(frozen=True)
class _Encoding:
    """How one kind of label is stored in one file type."""

    suffix: str
    read: _Reader
    write: _Writer


# ---------------------------------------------------------------- label encodings


def _read_class_ids(path: Path, options: TaskOptions) -> torch.Tensor:
    ids = read_png_array(path)
    _check_class_ids(ids, _num_classes(options), str(path))
    return torch.from_numpy(ids)


def _write_class_ids(path: Path, label: torch.Tensor, options: TaskOptions) -> None:
    ids = label.cpu().numpy()
    _check_class_ids(ids, _num_classes(options), str(path))
    if ids.min(initial=0) < 0 or ids.max(initial=0) > 255:
        raise DataError(f"{path}: class ids must be in 0..255 for an 8-bit PNG")
    write_png_array(path, ids.astype(np.uint8))


def _read_binary(path: Path, options: TaskOptions) -> torch.Tensor:
    values = read_png_array(path)
    unexpected = np.setdiff1d(np.unique(values), [0, 1, IGNORE_INDEX])
    if unexpected.size:
        raise DataError(
            f"{path}: binary labels must be 0, 1 or {IGNORE_INDEX} (ignore), "
            f"found {unexpected[:5].tolist()}"
        )
    return torch.from_numpy(values.astype(np.uint8))


def _write_binary(path: Path, label: torch.Tensor, options: TaskOptions) -> None:
    values = label.cpu().numpy()
    if np.setdiff1d(np.unique(values), [0, 1, IGNORE_INDEX]).size:
        raise DataError(f"{path}: binary labels must be 0, 1 or {IGNORE_INDEX}")
    write_png_array(path, values.astype(np.uint8))


def _read_depth_png(path: Path, options: TaskOptions) -> torch.Tensor:
    millimetres = read_png_array(path)
    return torch.from_numpy(millimetres.astype(np.float32) / 1000.0)[None]


def _write_depth_png(path: Path, label: torch.Tensor, options: TaskOptions) -> None:
    metres = label[0].cpu().double().numpy()
    _check_depth(metres, str(path))
    millimetres = np.round(metres * 1000.0)
    if millimetres.max(initial=0) > np.iinfo(np.uint16).max:
        raise DataError(
            f"{path}: depth {metres.max():.3f} m exceeds the 65.535 m a 16-bit PNG in "
            "millimetres holds; store depth as .npy"
        )
    write_png_array(path, millimetres.astype(np.uint16))


def _read_depth_npy(path: Path, options: TaskOptions) -> torch.Tensor:
    array = read_npy(path)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise DataError(
            f"{path}: depth must be a numeric [H, W] or [1, H, W] array, "
            f"got {array.dtype} {list(array.shape)}"
        )
    _check_depth(array, str(path))
    return torch.from_numpy(array.astype(np.float32))[None]


def _write_depth_npy(path: Path, label: torch.Tensor, options: TaskOptions) -> None:
    metres = label[0].cpu().numpy().astype(np.float32)
    _check_depth(metres, str(path))
    write_npy(path, metres)


def _read_normals_png(path: Path, options: TaskOptions) -> torch.Tensor:
    colours = read_png_array(path, channels=3)
    vectors = torch.from_numpy(colours.astype(np.float32) / 255.0 * 2.0 - 1.0).permute(2, 0, 1)
    length = vectors.norm(dim=0, keepdim=True)
    unit = (length > 0.5) & (length < 1.5)  # invalid colours decode far from unit length
    return torch.where(unit, vectors / length.clamp_min(1e-6), torch.zeros_like(vectors))


def _write_normals_png(path: Path, label: torch.Tensor, options: TaskOptions) -> None:
    vectors = label.cpu().float()
    _check_finite(vectors.numpy(), str(path), "normals")
    colours = ((vectors + 1.0) / 2.0 * 255.0).round().clamp(0, 255).to(torch.uint8)
    invalid = vectors.abs().sum(dim=0) == 0
    colours[:, invalid] = torch.tensor(NORMALS_PNG_INVALID, dtype=torch.uint8)[:, None]
    write_png_array(path, colours.permute(1, 2, 0).numpy())


def _read_normals_npy(path: Path, options: TaskOptions) -> torch.Tensor:
    array = read_npy(path)
    if array.ndim != 3 or array.shape[2] != 3 or not np.issubdtype(array.dtype, np.floating):
        raise DataError(
            f"{path}: normals must be a float [H, W, 3] array, got {array.dtype} "
            f"{list(array.shape)}"
        )
    _check_finite(array, str(path), "normals")
    return torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1).contiguous()


def _write_normals_npy(path: Path, label: torch.Tensor, options: TaskOptions) -> None:
    array = label.cpu().float().permute(1, 2, 0).numpy()
    _check_finite(array, str(path), "normals")
    write_npy(path, np.ascontiguousarray(array))


def _read_instance(path: Path, options: TaskOptions) -> torch.Tensor:
    return torch.from_numpy(read_png_array(path))


def _write_instance(path: Path, label: torch.Tensor, options: TaskOptions) -> None:
    ids = label.cpu().numpy()
    if ids.min(initial=0) < 0 or ids.max(initial=0) > np.iinfo(np.uint16).max:
        raise DataError(f"{path}: instance ids must be in 0..65535 for a 16-bit PNG")
    write_png_array(path, ids.astype(np.uint16))


def _read_regression(path: Path, options: TaskOptions) -> torch.Tensor:
    array = read_npy(path)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or not np.issubdtype(array.dtype, np.floating):
        raise DataError(
            f"{path}: a regression label must be a float [C, H, W] or [H, W] array, got "
            f"{array.dtype} {list(array.shape)}"
        )
    _check_no_infinity(array, str(path))
    return torch.from_numpy(array.astype(np.float32))


def _write_regression(path: Path, label: torch.Tensor, options: TaskOptions) -> None:
    array = label.cpu().numpy().astype(np.float32)
    if array.ndim != 3:
        raise DataError(f"{path}: a regression label is [C, H, W], got {list(array.shape)}")
    _check_no_infinity(array, str(path))
    write_npy(path, array)


LABEL_ENCODINGS: dict[LabelKind, dict[str, _Encoding]] = {
    LabelKind.MASK: {"png": _Encoding(".png", _read_class_ids, _write_class_ids)},
    LabelKind.BINARY: {"png": _Encoding(".png", _read_binary, _write_binary)},
    LabelKind.DEPTH: {
        "npy": _Encoding(".npy", _read_depth_npy, _write_depth_npy),
        "png": _Encoding(".png", _read_depth_png, _write_depth_png),
    },
    LabelKind.NORMALS: {
        "npy": _Encoding(".npy", _read_normals_npy, _write_normals_npy),
        "png": _Encoding(".png", _read_normals_png, _write_normals_png),
    },
    LabelKind.INSTANCE: {"png": _Encoding(".png", _read_instance, _write_instance)},
    LabelKind.REGRESSION: {"npy": _Encoding(".npy", _read_regression, _write_regression)},
}
"""Label kind -> file type -> encoding; the first file type is the one written by default."""


LabelKinds = Mapping[str, LabelKind]
"""Task name -> label kind: which tasks a folder can hold and how each is encoded."""


def task_encodings(task: str, where: str | Path, label_kinds: LabelKinds) -> dict[str, _Encoding]:
    """File type -> encoding of ``task``'s labels, chosen by its kind in ``label_kinds``.

    A task without a kind (not registered) is a DataError naming ``where`` (the folder or file
    that asked for it), so a dataset on disk fails with its path rather than a config key.
    """
    if task not in label_kinds:
        known = ", ".join(sorted(label_kinds))
        raise DataError(f"{where}: unknown task {task!r}; known: {known}")
    return LABEL_ENCODINGS[label_kinds[task]]


# ---------------------------------------------------------------- reader


class FolderDataset(DenseDataset):
    """A dataset in the folder format (see the module docstring and ``docs/data.md``).

    ``split`` names ``splits/<split>.txt``; ``None`` takes every image, sorted by name.
    ``tasks`` selects labels (default: the tasks listed in ``dataset.json``, or every task
    folder present when there is no ``dataset.json``). ``task_options`` is
    ``dataset.json``'s, e.g. ``{"semseg": {"num_classes": K, "class_names": [...]}}``.
    ``label_kinds`` says how each task's files are encoded (see the module docstring).
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        tasks: Sequence[str] | None = None,
        transform: Transform | None = None,
        *,
        label_kinds: LabelKinds,
    ) -> None:
        super().__init__(transform)
        self.root = Path(root)
        self.label_kinds = dict(label_kinds)
        description = read_dataset_description(self.root, self.label_kinds)
        self._encodings = self._select_tasks(description, tasks)
        self.tasks = tuple(self._encodings)
        options = description.get("task_options", {})
        self.task_options = {task: dict(options.get(task, {})) for task in self.tasks}
        self._images = _index_files(self.root / "images", IMAGE_SUFFIXES)
        self.names = self._select_names(split)
        self._labels = {task: self._index_labels(task) for task in self.tasks}
        self._intrinsics_files = _index_files(self.root / "intrinsics", (".json",), optional=True)
        shared = self.root / "intrinsics.json"
        self._shared_intrinsics = _read_intrinsics(shared) if shared.is_file() else None

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> Sample:
        name = self.names[index]
        image_path = self._images[name]
        image = read_image(image_path)
        meta: dict[str, Any] = {"name": name}
        intrinsics = self.intrinsics(name)
        if intrinsics is not None:
            meta["intrinsics"] = intrinsics
        sample: Sample = {"image": image, "meta": meta}
        for task in self.tasks:
            path = self._labels[task].get(name)
            if path is None:
                continue
            label = _encoding_for(self._encodings[task], path).read(path, self.task_options[task])
            if tuple(label.shape[-2:]) != tuple(image.shape[-2:]):
                raise DataError(
                    f"{path}: label size {tuple(label.shape[-2:])} differs from image "
                    f"{image_path} size {tuple(image.shape[-2:])}"
                )
            sample[task] = label
        return sample

    def intrinsics(self, name: str) -> torch.Tensor | None:
        """The ``[3, 3]`` intrinsics of image ``name`` (its own file, else the shared one)."""
        path = self._intrinsics_files.get(name)
        if path is not None:
            return _read_intrinsics(path)
        return None if self._shared_intrinsics is None else self._shared_intrinsics.clone()

    def _select_tasks(
        self, description: dict[str, Any], tasks: Sequence[str] | None
    ) -> dict[str, dict[str, _Encoding]]:
        """The selected tasks, in order, with their encodings; an unregistered task fails
        before a missing task folder."""
        selected = description["tasks"] if tasks is None else tasks
        encodings = {task: task_encodings(task, self.root, self.label_kinds) for task in selected}
        missing = [task for task in tasks or () if not (self.root / task).is_dir()]
        if missing:
            raise DataError(f"{self.root / missing[0]}: no such task folder")
        return encodings

    def _select_names(self, split: str | None) -> list[str]:
        if split is None:
            return sorted(self._images)
        split_file = self.root / "splits" / f"{split}.txt"
        if not split_file.is_file():
            raise DataError(f"{split_file}: split file not found")
        names = read_split(split_file)
        missing = [name for name in names if name not in self._images]
        if missing:
            raise DataError(
                f"{split_file}: {len(missing)} names have no image in {self.root / 'images'}, "
                f"e.g. {missing[:3]}"
            )
        return names

    def _index_labels(self, task: str) -> dict[str, Path]:
        suffixes = tuple(encoding.suffix for encoding in self._encodings[task].values())
        return _index_files(self.root / task, suffixes, optional=True)


def read_dataset_description(root: Path, label_kinds: LabelKinds) -> dict[str, Any]:
    """``dataset.json`` of a folder dataset, or one inferred from its task folders.

    Checks that ``root`` and ``root/images`` exist, the format version, and that every
    listed task has a label kind. Without ``dataset.json`` the tasks are those of
    ``label_kinds`` that have a folder, sorted by name.
    """
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if not (root / "images").is_dir():
        raise DataError(f"{root / 'images'}: images folder not found")
    path = root / "dataset.json"
    if not path.is_file():
        present = [task for task in sorted(label_kinds) if (root / task).is_dir()]
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "tasks": present,
            "task_options": {},
        }
    description = read_json(path)
    if not isinstance(description, dict) or description.get("format") != FORMAT_NAME:
        raise DataError(f"{path}: not a {FORMAT_NAME} description (key 'format')")
    if description.get("version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: format version {description.get('version')!r} is not supported "
            f"(this densetasks reads version {FORMAT_VERSION})"
        )
    description.setdefault("tasks", [])
    for task in description["tasks"]:
        task_encodings(task, path, label_kinds)  # an unknown task fails here, naming the file
    description.setdefault("task_options", {})
    return description


def read_split(path: Path) -> list[str]:
    """The names in a split file: one per line, blank lines skipped, duplicates an error."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise DataError(f"{path}: cannot read split file ({error})") from None
    names = [line.strip() for line in lines if line.strip()]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DataError(f"{path}: names listed twice: {duplicates[:3]}")
    return names


# ---------------------------------------------------------------- writer


def write_folder_dataset(
    samples: Iterable[Sample],
    root: str | Path,
    split: str,
    label_kinds: LabelKinds,
    task_options: dict[str, TaskOptions] | None = None,
    intrinsics_per_sample: bool = True,
    formats: dict[str, str] | None = None,
) -> int:
    """Write samples into the folder format and return how many were written.

    Every label present in a sample is written in its task's encoding (by its kind in
    ``label_kinds``); ``formats`` picks
    the file type per task where there is a choice (``{"depth": "png"}``; default ``npy``
    for depth and normals, exact). Images are written as 8-bit PNG. A sample is named by
    ``meta["name"]`` (else ``<split>_<index>``); ``meta["intrinsics"]`` goes to
    ``intrinsics/<name>.json``, or with ``intrinsics_per_sample=False`` to one
    ``intrinsics.json`` (all samples must then share it). ``splits/<split>.txt`` gains the
    names, ``dataset.json`` the tasks and their ``task_options`` (e.g. ``{"semseg":
    {"class_names": [...]}, "instance": {"instance_classes": [...]}}``, what a dataset's
    ``task_options`` hold). Every file is written atomically.
    """
    root = Path(root)
    chosen = _check_formats(formats or {}, label_kinds)
    existing = read_dataset_description(root, label_kinds) if (root / "images").is_dir() else None
    stored_options = dict(existing["task_options"]) if existing else {}
    for task, options in (task_options or {}).items():
        stored_options[task] = dict(options)
        if "class_names" in options:
            stored_options[task].setdefault("num_classes", len(options["class_names"]))
    written_names: list[str] = []
    written_tasks: set[str] = set()
    shared_intrinsics: torch.Tensor | None = None
    for index, sample in enumerate(samples):
        meta = sample.get("meta", {})
        name = str(meta.get("name", f"{split}_{index:06d}"))
        _check_name(name)
        _remove_other_encodings(root / "images" / f"{name}.png", IMAGE_SUFFIXES)
        write_image(root / "images" / f"{name}.png", sample["image"])
        for task, label in sample.items():
            if task in ("image", "meta"):
                continue
            write_label(
                root, task, name, label, label_kinds, chosen.get(task), stored_options.get(task, {})
            )
            written_tasks.add(task)
        intrinsics = meta.get("intrinsics")
        if intrinsics is not None and intrinsics_per_sample:
            write_json(root / "intrinsics" / f"{name}.json", {"K": intrinsics.tolist()})
        elif intrinsics is not None:
            if shared_intrinsics is not None and not torch.equal(intrinsics, shared_intrinsics):
                raise DataError(
                    f"{root / 'intrinsics.json'}: sample {name!r} has other intrinsics than "
                    "the samples before it; use intrinsics_per_sample=True"
                )
            shared_intrinsics = intrinsics
        written_names.append(name)
    if shared_intrinsics is not None:
        write_json(root / "intrinsics.json", {"K": shared_intrinsics.tolist()})
    _extend_split(root / "splits" / f"{split}.txt", written_names)
    register_tasks(root, written_tasks, label_kinds, stored_options)
    return len(written_names)


def write_label(
    root: Path,
    task: str,
    name: str,
    label: torch.Tensor,
    label_kinds: LabelKinds,
    file_format: str | None = None,
    options: TaskOptions | None = None,
) -> Path:
    """Write one label as ``root/<task>/<name>.<suffix>`` and return the path.

    A file of the same name with another suffix (a stale encoding) is removed, so a name
    never has two files for one task.
    """
    encodings = task_encodings(task, root / task, label_kinds)
    encoding = encodings[file_format or next(iter(encodings))]
    path = root / task / f"{name}{encoding.suffix}"
    _remove_other_encodings(path, tuple(other.suffix for other in encodings.values()))
    encoding.write(path, label, options or {})
    return path


def register_tasks(
    root: Path,
    tasks: Iterable[str],
    label_kinds: LabelKinds,
    task_options: dict[str, TaskOptions] | None = None,
) -> None:
    """Add ``tasks`` (and replace their ``task_options``) in ``root/dataset.json``; the
    tasks are listed sorted by name."""
    description = read_dataset_description(root, label_kinds)
    new = set(tasks) - set(description["tasks"])
    for task in new:
        task_encodings(task, root / "dataset.json", label_kinds)  # only known tasks are listed
    present = {*description["tasks"], *new}
    description["tasks"] = sorted(present)
    options = {task: value for task, value in (task_options or {}).items() if task in present}
    description["task_options"] = {**description["task_options"], **options}
    write_json(root / "dataset.json", description)


# ---------------------------------------------------------------- checks and helpers


def _num_classes(options: TaskOptions) -> int | None:
    if "num_classes" in options:
        return int(options["num_classes"])
    if "class_names" in options:
        return len(options["class_names"])
    return None


def _check_class_ids(ids: np.ndarray, num_classes: int | None, where: str) -> None:
    if num_classes is None:
        return
    values = np.unique(ids)
    bad = values[((values >= num_classes) | (values < 0)) & (values != IGNORE_INDEX)]
    if bad.size:
        raise DataError(
            f"{where}: class id {int(bad[0])} is not in 0..{num_classes - 1} "
            f"({num_classes} classes) nor the ignore value {IGNORE_INDEX}"
        )


def _check_finite(array: np.ndarray, where: str, what: str) -> None:
    if not np.isfinite(array).all():
        raise DataError(f"{where}: {what} contains NaN or infinite values")


def _check_no_infinity(values: np.ndarray, where: str) -> None:
    """Regression values may be any number, or NaN for "no label"; ±inf is neither."""
    if np.isinf(values).any():
        raise DataError(f"{where}: regression values contain infinity (NaN marks no label)")


def _check_depth(metres: np.ndarray, where: str) -> None:
    _check_finite(metres, where, "depth")
    if (metres < 0).any():
        raise DataError(f"{where}: depth has negative values (0 marks invalid pixels)")


def _check_formats(formats: dict[str, str], label_kinds: LabelKinds) -> dict[str, str]:
    for task, file_format in formats.items():
        choices = task_encodings(task, f"formats[{task!r}]", label_kinds)
        if file_format not in choices:
            raise DataError(f"formats[{task!r}] = {file_format!r}; choices: {sorted(choices)}")
    return formats


def _check_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        raise DataError(f"sample name {name!r} cannot be a file name")


def _encoding_for(encodings: dict[str, _Encoding], path: Path) -> _Encoding:
    """The encoding of an indexed label file (the index only holds known suffixes)."""
    by_suffix = {encoding.suffix: encoding for encoding in encodings.values()}
    return by_suffix[path.suffix.lower()]


def _index_files(
    folder: Path, suffixes: tuple[str, ...], optional: bool = False
) -> dict[str, Path]:
    """Stem -> path of the files with ``suffixes`` in ``folder``; two files of one stem fail."""
    if not folder.is_dir():
        if optional:
            return {}
        raise DataError(f"{folder}: folder not found")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in suffixes or path.name.startswith("."):
            continue
        if path.stem in files:
            raise DataError(f"{folder}: {files[path.stem].name} and {path.name} share a name")
        files[path.stem] = path
    return files


def _read_intrinsics(path: Path) -> torch.Tensor:
    content = read_json(path)
    matrix = content.get("K") if isinstance(content, dict) else None
    try:
        intrinsics = torch.tensor(matrix, dtype=torch.float32)
    except (TypeError, ValueError):
        intrinsics = None
    if (
        intrinsics is None
        or intrinsics.shape != (3, 3)
        or not all(math.isfinite(value) for value in intrinsics.flatten().tolist())
    ):
        raise DataError(f"{path}: key 'K' must be a finite 3x3 matrix")
    return intrinsics


def _remove_other_encodings(path: Path, suffixes: tuple[str, ...]) -> None:
    """Remove files that share ``path``'s stem under another of ``suffixes``."""
    for suffix in suffixes:
        other = path.with_suffix(suffix)
        if other != path:
            other.unlink(missing_ok=True)


def _extend_split(path: Path, names: list[str]) -> None:
    """Append ``names`` not yet in the split file (order kept), atomically."""
    listed = read_split(path) if path.is_file() else []
    for name in names:
        if name not in listed:
            listed.append(name)
    write_text(path, "\n".join(listed) + "\n")
