"""The base class of the real-dataset readers: the root, split and task checks done once.

Every reader is built as ``Reader(root, split, tasks, transform, **options)`` and must fail
on a wrong root, an unknown split or an unavailable task before it indexes any file, with
the same messages whichever dataset it reads; :class:`DatasetReader` does that, so a reader
keeps only its own layout: which files to index and how to decode them.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from densetasks.data.dataset import DenseDataset, Sample, Transform
from densetasks.data.readers._checks import require_dir
from densetasks.errors import ConfigError


class DatasetReader(DenseDataset):
    """A dataset in one published layout, opened from its ``root`` folder.

    Subclasses set :attr:`format_name`, :attr:`root_holds`, :attr:`splits` and ``tasks``
    (every task the layout can provide), call ``super().__init__`` first, then fill
    :attr:`names` (one per sample, in order) and implement ``load``.
    """

    format_name: ClassVar[str]
    """The name the reader is registered under (``READERS``), and named by in errors."""
    root_holds: ClassVar[str]
    """What the root folder is expected to be, for the missing-folder error."""
    splits: ClassVar[tuple[str, ...]]
    """The split names the layout has."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        tasks: Sequence[str] | None,
        transform: Transform | None,
        available: Sequence[str] | None = None,
    ) -> None:
        """Check ``root`` is a folder, ``split`` one of :attr:`splits` and ``tasks`` among
        ``available`` (default: the class's ``tasks``; a reader passes fewer when an option
        turns a task off). ``tasks=None`` selects every available task."""
        super().__init__(transform)
        self.root = require_dir(Path(root), self.root_holds)
        self.split = self._check_split(split)
        self.tasks = self._select_tasks(type(self).tasks if available is None else available, tasks)
        self.names: list[str] = []

    def _check_split(self, split: str) -> str:
        if split not in self.splits:
            raise ConfigError(
                f"data.split: {self.format_name} splits are {list(self.splits)}, got {split!r}"
            )
        return split

    def _select_tasks(
        self, available: Sequence[str], requested: Sequence[str] | None
    ) -> tuple[str, ...]:
        if requested is None:
            return tuple(available)
        unknown = [task for task in requested if task not in available]
        if unknown:
            raise ConfigError(
                f"data.tasks: {self.format_name} provides {list(available)}, not {unknown}"
            )
        return tuple(requested)

    def set_class_names(self, **class_names: Sequence[str]) -> None:
        """Set ``task_options`` of the selected class tasks (``semseg=NAMES``): the number
        of classes and their names, which the task heads and ``data check`` need."""
        self.task_options = {
            task: {"num_classes": len(names), "class_names": list(names)}
            for task, names in class_names.items()
            if task in self.tasks
        }

    def new_sample(
        self, index: int, image: torch.Tensor, intrinsics: torch.Tensor | None = None
    ) -> Sample:
        """Sample ``index`` before its labels: the image and ``meta`` with the name and,
        where the camera is known, the intrinsics."""
        meta: dict[str, Any] = {"name": self.names[index]}
        if intrinsics is not None:
            meta["intrinsics"] = intrinsics
        return {"image": image, "meta": meta}

    def __len__(self) -> int:
        return len(self.names)
