"""The Task contract: everything about one kind of per-pixel output, and nothing else.

A task knows its head size, loss (with ignore / valid masks), how raw outputs become
predictions, its metrics, how to draw a label or a prediction, how its label behaves under
transforms (its :class:`~densetasks.data.sample.LabelKind`), whether its likelihood is a
classification or a regression (uncertainty weighting, paper 000 eq. 10), and how it lives in
the 3-channel composite output space of CompositeTasking (paper 002).

Tensor conventions (batched, NCHW):

* ``output``: raw head output ``[B, channels, H, W]`` at the label's resolution.
* ``label``: as in :mod:`densetasks.data.sample` with a leading batch dimension.
* ``decode(output)`` returns a prediction *in the label's format* (class ids, metres, unit
  vectors, probabilities for binary tasks), so ``visualize`` and the metrics read both alike.
* ``mask``: optional bool ``[B, H, W]``; only these pixels are supervised (a Task Palette
  selects pixels per task). It is combined with the label's own valid pixels.
"""

from abc import ABC, abstractmethod
from collections.abc import Mapping
from enum import Enum
from typing import Any, ClassVar

import numpy as np
import torch

from densetasks.data.sample import LabelKind
from densetasks.metrics.base import Metric


class Likelihood(str, Enum):
    """Which uncertainty-weighted form a task's loss takes (paper 000, eq. 10)."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"


class Task(ABC):
    """One dense prediction task; subclasses live one per file in ``densetasks/tasks``."""

    name: ClassVar[str]
    label_kind: ClassVar[LabelKind]
    likelihood: ClassVar[Likelihood]
    primary_metric: ClassVar[str]
    """The metric used for Δm with one metric per task and for choosing the best checkpoint."""

    @property
    @abstractmethod
    def channels(self) -> int:
        """Number of channels the task's head must produce."""

    @abstractmethod
    def loss(
        self, output: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scalar loss averaged over valid (and masked-in) pixels; 0 with a graph if none."""

    @abstractmethod
    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """Raw head output -> prediction in the label's format."""

    @abstractmethod
    def metrics(self) -> Metric:
        """A fresh metric object for one evaluation."""

    @abstractmethod
    def visualize(self, value: torch.Tensor) -> np.ndarray:
        """One unbatched label or prediction -> ``uint8`` RGB image ``[H, W, 3]``."""

    @abstractmethod
    def from_composite(self, composite: torch.Tensor) -> torch.Tensor:
        """3-channel composite output ``[B, 3, H, W]`` -> this task's raw output.

        Classes: quasi-logits ``1 / (‖sigmoid(o) − a_k‖ + ε)`` over fixed anchors ``a_k``;
        scalar tasks: mean over the channels; normals: identity (paper 002, Sec. 3.3).
        """

    @abstractmethod
    def to_composite(self, label: torch.Tensor) -> torch.Tensor:
        """A batched label -> its point ``[B, 3, H, W]`` in the composite output space."""

    @property
    def context_tasks(self) -> tuple[str, ...]:
        """Other tasks whose predictions this task's evaluation reads (none by default).

        Instances grouped from centroid votes need the semantic prediction (paper 000, Sec. 4).
        """
        return ()

    def evaluation_input(self, predictions: Mapping[str, torch.Tensor]) -> Any:
        """What :meth:`metrics` and :meth:`visualize` receive as a prediction, given every
        task's decoded prediction: by default this task's own. Indexable per image."""
        return predictions[self.name]

    def check_output(self, output: torch.Tensor, label: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``output`` is ``[B, channels, H, W]`` for ``label``."""
        expected = (label.shape[0], self.channels, *label.shape[-2:])
        if tuple(output.shape) != expected:
            raise ValueError(
                f"{self.name} output has shape {tuple(output.shape)}, expected {expected} "
                f"([B, {self.channels}, H, W]) for a label of shape {tuple(label.shape)}"
            )

    def valid(self, label: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Bool ``[B, H, W]``: supervised pixels of ``label``, restricted by ``mask``."""
        valid = self.label_kind.valid(label)
        return valid if mask is None else valid & mask

    def options(self) -> dict[str, Any]:
        """The constructor arguments, so a checkpoint can rebuild the task."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options()})"


def evaluation_inputs(
    tasks: Mapping[str, Task], outputs: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """Decode every task's raw output, then give each task its evaluation input (its own
    prediction, combined with its ``context_tasks``' where it has any)."""
    decoded = {name: task.decode(outputs[name]) for name, task in tasks.items()}
    return {name: task.evaluation_input(decoded) for name, task in tasks.items()}
