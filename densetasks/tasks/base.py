"""The Task contract: everything about one kind of per-pixel output, and nothing else.

A task knows its head size, loss (with ignore / valid masks), how raw outputs become predictions,
its metrics, how to draw a label or a prediction, how its label behaves under transforms (its
:class:`~densetasks.data.sample.LabelKind`), whether its likelihood is a classification or a
regression (uncertainty weighting, Kendall et al., CVPR 2018, eq. 10), and how it lives in the
3-channel composite output space of CompositeTasking (Popovic et al., CVPR 2021).

Tensor conventions (batched, NCHW):

* ``output``: raw head output ``[B, channels, H, W]`` at the label's resolution.
* ``label``: as in :mod:`densetasks.data.sample` with a leading batch dimension.
* ``decode(output)`` returns a prediction *in the label's format* (class ids, metres, unit
  vectors, probabilities for binary tasks), so ``visualize`` and the metrics read both alike.
* ``mask``: optional bool ``[B, H, W]``; only these pixels are supervised (a Task Palette
  selects pixels per task). It is combined with the label's own valid pixels.

What a prediction means is the task's to say, once, for everything that shows or hands it on:
:meth:`Task.meaning` (units, channels, range, class names: the export sidecar and the values
under the mouse on the web page), :meth:`Task.picture_key` (the legend or colour bar drawn
under a picture; :meth:`Task.visualize_with` paints with a given key, so that a label and
its prediction share one colour range) and :attr:`Task.picture_colours` (the picture's
colours in words, where no key is drawn). No caller checks a task's type.
"""

import copy
import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from densetasks.data.sample import LabelKind
from densetasks.errors import ConfigError
from densetasks.metrics.base import Metric
from densetasks.pictures import PictureKey


class Likelihood(str, Enum):
    """Which uncertainty-weighted form a task's loss takes (Kendall et al., CVPR 2018, eq. 10)."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"


@dataclass(frozen=True)
class Meaning:
    """What a task's prediction holds at every pixel (:meth:`Task.prediction_values`): what
    the export sidecar says of the graph's output and what the web page shows under the
    mouse, so a prediction can be used without reading the task's code.

    ``text``: one line for people, e.g. ``"depth in metres"``. ``unit`` of every value
    (``"m"``, ``"px"``; ``""`` for none). ``channels``: the names of the channel axis's
    entries (``("x", "y", "z")``); empty for a prediction without one (``[B, H, W]``).
    ``value_range``: the smallest and largest value a prediction can hold (``None``: open).
    ``classes``: the class names by id, for a prediction of class ids; ``colours``: their
    RGB colours in the task's pictures, by id. ``digits``: decimals worth showing.
    """

    text: str
    unit: str = ""
    channels: tuple[str, ...] = ()
    value_range: tuple[float | None, float | None] = (None, None)
    classes: tuple[str, ...] = ()
    colours: tuple[tuple[int, int, int], ...] = ()
    digits: int = 2

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples as lists."""
        return {key: _lists(value) for key, value in asdict(self).items()}


def _lists(value: Any) -> Any:
    """Tuples (nested too) as lists."""
    return [_lists(item) for item in value] if isinstance(value, tuple) else value


class Task(ABC):
    """One dense prediction task; subclasses live one per file in ``densetasks/tasks``."""

    name: ClassVar[str]
    label_kind: ClassVar[LabelKind]
    likelihood: ClassVar[Likelihood]
    primary_metric: ClassVar[str]
    """The metric used for Δm with one metric per task and for choosing the best checkpoint."""

    _options: Mapping[str, Any] = MappingProxyType({})
    """The constructor arguments, defaults applied; recorded when ``__init__`` is called."""

    example_options: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    """Options that, merged over a dataset's own (class counts and names), build the task
    for a run on the embedded synthetic scenes: what the examples and the registry-wide tests
    (train, resume, export and predict every registered task) build it with. Empty unless the
    constructor needs an option that no dataset supplies (``task_palette``'s ``tasks``)."""

    picture_colours: ClassVar[str] = ""
    """How :meth:`visualize`'s colours encode the values, in words (``"RGB = (n + 1) / 2"``),
    for where no :meth:`picture_key` is drawn: the web page's legend."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap a subclass's own ``__init__`` so that every call records its arguments: the
        options are written down once, here, instead of by a hand-kept ``options()``."""
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_options(cls.__init__)

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

    def visualize_with(self, value: torch.Tensor, key: PictureKey | None) -> np.ndarray:
        """:meth:`visualize` in the colours of ``key``, a key of this task's pictures
        (:meth:`picture_key`, or :func:`~densetasks.pictures.joint_key` of two): a label and
        its prediction painted with their joint key share one colour range. By default
        :meth:`visualize`, for a task whose colours do not depend on the values shown (class
        colours, normals); a task that colours through a
        :class:`~densetasks.pictures.ColourBar` overrides it."""
        return self.visualize(value)

    @abstractmethod
    def meaning(self) -> Meaning:
        """What :meth:`prediction_values` holds per pixel: units, channels, value range,
        class names (the export sidecar, the web page's values under the mouse)."""

    def prediction_values(self, output: torch.Tensor) -> torch.Tensor:
        """The values :meth:`meaning` describes, from a batched raw output: what an exported
        graph gives and the web page reads. :meth:`decode`'s output, or for a
        :attr:`scale_shift_invariant` task the raw output (:meth:`metric_input`: there is no
        absolute prediction to decode)."""
        return self.metric_input(self.decode(output), output)

    def picture_key(self, value: Any, mask: torch.Tensor | None = None) -> PictureKey | None:
        """What the colours of ``visualize(value)`` mean, to draw under the picture: a
        :class:`~densetasks.pictures.ClassLegend` of the classes shown, a
        :class:`~densetasks.pictures.ColourBar` over the values shown (those inside ``mask``,
        when given), or an :class:`~densetasks.pictures.IconKey`. ``value`` is an unbatched
        label or prediction (an :meth:`evaluation_input`). ``None`` (the default) when the
        picture has no key; :attr:`picture_colours` then says in words what its colours are."""
        return None

    @abstractmethod
    def from_composite(self, composite: torch.Tensor) -> torch.Tensor:
        """3-channel composite output ``[B, 3, H, W]`` -> this task's raw output.

        Classes: quasi-logits ``1 / (‖sigmoid(o) − a_k‖ + ε)`` over fixed anchors ``a_k``; scalar
        tasks: mean over the channels; normals: identity (Popovic et al., CVPR 2021, Sec. 3.3).
        """

    @abstractmethod
    def to_composite(self, label: torch.Tensor) -> torch.Tensor:
        """A batched label -> its point ``[B, 3, H, W]`` in the composite output space."""

    @property
    def context_tasks(self) -> tuple[str, ...]:
        """Other tasks whose predictions this task's evaluation reads (none by default).

        Instances grouped from centroid votes need the semantic prediction (Kendall et al.,
        CVPR 2018, Sec. 4).
        """
        return ()

    def evaluation_input(self, predictions: Mapping[str, torch.Tensor]) -> Any:
        """What :meth:`metrics` and :meth:`visualize` receive as a prediction, given every
        task's decoded prediction: by default this task's own. Indexable per image."""
        return predictions[self.name]

    scale_shift_invariant: bool = False
    """Whether the raw output is defined only up to a per-image scale and shift (Hickson et
    al.'s ``ssi`` disparity): then there is no absolute prediction to decode, the metrics
    align the raw output per image before scoring it, and an exported graph gives the raw
    output and is checked up to scale and shift."""

    def metric_input(self, prediction: Any, output: torch.Tensor) -> Any:
        """What :meth:`metrics` receives, given this task's :meth:`evaluation_input` and its
        raw output: the evaluation input, or for a :attr:`scale_shift_invariant` task the raw
        output (a disparity up to scale and shift may be <= 0 before the alignment, which
        decoding has to clamp). A task whose decoding drops what its metric needs overrides
        it."""
        return output if self.scale_shift_invariant else prediction

    def target(self, labels: Mapping[str, Any]) -> torch.Tensor | None:
        """This task's label in a batch, ``None`` where the batch does not supervise it: by
        default ``labels[name]``. A task whose label is derived from other labels (the Task
        Palette a semantic rule paints from the class map) overrides it.

        ``labels`` is the whole collated batch: ``image`` (transformed and normalised,
        ``[B, 3, H, W]``), every label it holds by task name (batched; a sample without the
        label has its kind's empty one), a conditioning input the dataset gives by name, and
        ``meta`` (a list of dicts).
        """
        return labels.get(self.name)

    @property
    def label_sources(self) -> tuple[str, ...]:
        """The dataset labels :meth:`target` reads, checked against the dataset's labels when
        a run is built: by default the task's own."""
        return (self.name,)

    def evaluation_target(
        self, labels: Mapping[str, torch.Tensor], mask: torch.Tensor | None = None
    ) -> Any:
        """What :meth:`metrics` receives as the ground truth, given the batch's labels: by
        default this task's :meth:`target`, with the pixels outside ``mask`` (the pixels a
        palette gives the task) made unsupervised."""
        label = self.target(labels)
        return label if mask is None else self.label_kind.restrict(label, mask)

    def check_output(self, output: torch.Tensor, label: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``output`` is ``[B, channels, H, W]`` for ``label``."""
        expected = (label.shape[0], self.channels, *label.shape[-2:])
        if tuple(output.shape) != expected:
            raise ValueError(
                f"{self.name} output has shape {tuple(output.shape)}, expected {expected} "
                f"([B, {self.channels}, H, W]) for a label of shape {tuple(label.shape)}"
            )

    def resize_output(self, output: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """A raw head output ``[B, C, h, w]`` resized to ``size = (H, W)`` as its values mean,
        e.g. to supervise an auxiliary output predicted at a lower resolution.

        By default bilinear with ``align_corners=False`` (``F.interpolate``): right for
        values that are the same quantity at any resolution (class logits, inverse depth,
        binary logits). Tasks whose values depend on the pixel grid override it.
        """
        if output.ndim != 4 or len(size) != 2:
            raise ValueError(
                f"{self.name} resize_output expects [B, C, h, w] and (H, W), "
                f"got {tuple(output.shape)} and {tuple(size)}"
            )
        return F.interpolate(output, size=tuple(size), mode="bilinear", align_corners=False)

    def discriminator_input(
        self, output: torch.Tensor, source_label: torch.Tensor | None
    ) -> torch.Tensor:
        """What a domain discriminator sees of a raw output ``[B, channels, H, W]``: a map of
        the same shape whose values mean the same in every domain (multi-task domain
        adaptation, Lopes et al., WACV 2023, Supp. B.3). Differentiable: the network is
        trained through it to fool the discriminator.

        ``source_label`` is this task's label of the *source* images of the batch (``None``
        if they have none), for tasks that normalise by the source's range; a target label
        never reaches this hook. A task without such a map cannot be adapted: the default
        raises :class:`ConfigError`, and :attr:`adaptable` says so before a run starts.
        """
        raise ConfigError(
            f"adaptation: task {self.name!r} has no discriminator input "
            "(Task.discriminator_input); adapt only tasks that define one"
        )

    @property
    def adaptable(self) -> bool:
        """Whether the task defines :meth:`discriminator_input` (so it can be adapted)."""
        return type(self).discriminator_input is not Task.discriminator_input

    def valid(self, label: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Bool ``[B, H, W]``: supervised pixels of ``label``, restricted by ``mask``."""
        valid = self.label_kind.valid(label)
        return valid if mask is None else valid & mask

    def options(self) -> dict[str, Any]:
        """The constructor arguments (defaults applied), so that a checkpoint can rebuild
        the task with ``create_task(name, **options)``; a copy, safe to change."""
        return copy.deepcopy(dict(self._options))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options()})"


_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _recording_options(init: Callable[..., None]) -> Callable[..., None]:
    """``init`` that first stores its bound arguments (defaults applied, made checkpoint-safe
    by :func:`_checkpoint_safe`) as the task's ``_options``.

    Only the outermost ``__init__`` of a ``super().__init__(...)`` chain records: that is the
    one of the class being built, whose signature ``create_task`` checks options against.
    """
    signature = inspect.signature(init)
    variadic = [p.name for p in signature.parameters.values() if p.kind in _VARIADIC]
    if variadic:
        raise TypeError(
            f"{init.__qualname__} takes *{variadic[0]}: task options must be named parameters"
        )

    @functools.wraps(init)
    def recording_init(self: Task, *args: Any, **kwargs: Any) -> None:
        if "_options" not in vars(self):
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = list(bound.arguments.items())[1:]  # without ``self``
            self._options = {name: _checkpoint_safe(value) for name, value in arguments}
        init(self, *args, **kwargs)

    return recording_init


def _checkpoint_safe(value: Any) -> Any:
    """``value`` with every mapping as a dict and every other sequence (tuple, list) but a
    string as a list, recursively: plain containers that ``torch.load(weights_only=True)``
    and YAML read back as they were, so the saved options equal a config's."""
    if isinstance(value, Mapping):
        return {key: _checkpoint_safe(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_checkpoint_safe(item) for item in value]
    return value


def evaluation_inputs(
    tasks: Mapping[str, Task], outputs: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """Decode every task's raw output, then give each task its evaluation input (its own
    prediction, combined with its ``context_tasks``' where it has any)."""
    decoded = {name: task.decode(outputs[name]) for name, task in tasks.items()}
    return {name: task.evaluation_input(decoded) for name, task in tasks.items()}


def metric_inputs(tasks: Mapping[str, Task], outputs: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """What each task's metrics are updated with: :func:`evaluation_inputs` passed through
    :meth:`Task.metric_input` with the task's raw output."""
    predictions = evaluation_inputs(tasks, outputs)
    return {
        name: task.metric_input(predictions[name], outputs[name]) for name, task in tasks.items()
    }
