"""Datasets by name: the built-in synthetic scenes, the generic folder format, real readers.

``create_dataset(name, split, label_kinds, transform=None, **options)`` is what the engine
calls with the ``data`` section of a run's config.
"""

import inspect
from collections.abc import Mapping, Sequence

from densetasks._registry import Registry
from densetasks.data.dataset import DenseDataset, Transform
from densetasks.data.folder import FolderDataset
from densetasks.data.readers import READERS
from densetasks.data.sample import LabelKind
from densetasks.data.synthetic import SyntheticScenes
from densetasks.errors import ConfigError

DATASETS: Registry[DenseDataset] = Registry("dataset")

SPLITS = ("train", "val", "test")


def _synthetic(
    split: str,
    transform: Transform | None = None,
    n_train: int = 256,
    n_val: int = 64,
    n_test: int = 64,
    seed: int = 0,
    size: tuple[int, int] = (128, 128),
    style: str = "default",
    num_objects: tuple[int, int] = (3, 6),
    persons: tuple[int, int] = (0, 2),
    tasks: Sequence[str] | None = None,
    depth_noise: str = "none",
) -> SyntheticScenes:
    """Three disjoint synthetic splits: each split renders its scenes from its own seed
    (``seed * 3 + split index``), so no scene is shared between train, val and test."""
    if split not in SPLITS:
        raise ConfigError(f"data: synthetic splits are {SPLITS}, got {split!r}")
    counts = {"train": n_train, "val": n_val, "test": n_test}
    return SyntheticScenes(
        n=counts[split],
        size=tuple(size),
        seed=seed * len(SPLITS) + SPLITS.index(split),
        style=style,
        num_objects=tuple(num_objects),
        persons=tuple(persons),
        tasks=tasks,
        transform=transform,
        depth_noise=depth_noise,
    )


def _folder(
    split: str,
    label_kinds: Mapping[str, LabelKind],
    transform: Transform | None = None,
    root: str | None = None,
    tasks: Sequence[str] | None = None,
) -> FolderDataset:
    if root is None:
        raise ConfigError("data.root: the folder dataset needs a root directory")
    return FolderDataset(
        root, split=split, tasks=tasks, transform=transform, label_kinds=label_kinds
    )


DATASETS.register("synthetic", _synthetic)
DATASETS.register("folder", _folder)
for _reader_name in READERS.names():
    DATASETS.register(_reader_name, READERS.get(_reader_name))


def create_dataset(
    name: str,
    split: str,
    label_kinds: Mapping[str, LabelKind],
    transform: Transform | None = None,
    config_path: str = "data",
    **options,
) -> DenseDataset:
    """Build dataset ``name`` for ``split`` with its options (``root`` for datasets on disk).

    ``label_kinds`` is the run's table of label kinds (task name -> kind); a dataset whose
    factory takes a ``label_kinds`` parameter (the folder format, which decodes each task's
    files by kind) receives it, the others know their labels' kinds themselves. An unknown
    option is a :class:`ConfigError` naming ``config_path``.
    """
    if "label_kinds" in inspect.signature(DATASETS.get(name)).parameters:
        options["label_kinds"] = label_kinds
    return DATASETS.create(
        name, split=split, transform=transform, config_path=config_path, **options
    )
