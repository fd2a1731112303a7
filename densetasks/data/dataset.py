"""The dataset contract shared by the synthetic scenes, the folder format and the readers."""

from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from typing import Any

import torch.utils.data

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]


class DenseDataset(torch.utils.data.Dataset, metaclass=ABCMeta):
    """A map-style dataset of sample dicts (see :mod:`densetasks.data.sample`).

    Subclasses set :attr:`tasks` (the labels they can provide; a given sample may still lack
    some) and :attr:`task_options` (what a task needs to know about this data, e.g.
    ``{"semseg": {"class_names": [...]}}``), and implement :meth:`load`. The optional
    ``transform`` is applied to every loaded sample.
    """

    tasks: tuple[str, ...] = ()

    def __init__(self, transform: Transform | None = None) -> None:
        self.transform = transform
        self.task_options: dict[str, dict[str, Any]] = {}

    @abstractmethod
    def load(self, index: int) -> Sample:
        """Read sample ``index`` as stored (no transform)."""

    def __getitem__(self, index: int) -> Sample:
        sample = self.load(index)
        return self.transform(sample) if self.transform is not None else sample
