"""The metric contract: ``update(pred, target)``, ``compute()``, ``reset()``.

States are tensors that are *sums* over the samples seen (counts, confusion matrices,
histograms), so a distributed evaluation is one all-reduce of :meth:`Metric.states` and the
dataset-level quantities papers report (mIoU from one confusion matrix over the whole set,
ODS at one threshold for the whole set) come out exactly.
"""

from abc import ABC, abstractmethod
from typing import ClassVar

import torch


class Metric(ABC):
    """Accumulates sum states over a dataset and turns them into named numbers."""

    higher_is_better: ClassVar[dict[str, bool]]
    """For every name that :meth:`compute` returns: is a larger value better?"""

    units: ClassVar[dict[str, str]] = {}
    """The unit of a name :meth:`compute` returns (``%``, ``m``, ``°``, ``px``, ``1/m``), for
    reports and logs; a name without one (a ratio such as depth's ``abs_rel``) is left out."""

    def __init__(self) -> None:
        self._states: dict[str, torch.Tensor] = {}
        self._defaults: dict[str, torch.Tensor] = {}

    def add_state(self, name: str, default: torch.Tensor) -> None:
        """Declare a sum state (float64 or int64, on the CPU), reset to ``default``."""
        self._defaults[name] = default.clone()
        self._states[name] = default.clone()

    def __getattr__(self, name: str) -> torch.Tensor:
        states = self.__dict__.get("_states", {})
        if name in states:
            return states[name]
        raise AttributeError(name)

    def set_state(self, name: str, value: torch.Tensor) -> None:
        self._states[name] = value

    def states(self) -> dict[str, torch.Tensor]:
        """The sum states, for an all-reduce across processes."""
        return self._states

    def reset(self) -> None:
        for name, default in self._defaults.items():
            self._states[name] = default.clone()

    @abstractmethod
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch: ``pred`` as the task's ``decode`` returns it, ``target`` its label."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The metrics over everything seen since the last reset."""
