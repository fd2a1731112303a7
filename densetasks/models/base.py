"""The model contract: encoders with stages, and architectures that return one output per task.

An **encoder** returns its feature maps shallow to deep, one per *stage*, described by
``feature_info`` as ``(channels, stride)``; ``forward_stages(x, start, end)`` runs a range of
stages so that an architecture can branch (or split a decoder) after any stage.

An **architecture** knows tasks only by name and channel count and computes no loss. Its
contract, every part of which the engine's training, evaluation and
:class:`~densetasks.engine.inference.Predictor` read (``docs/design.md`` draws the data flow):

* ``forward(image, **conditions) -> {key: Tensor}``: the image and the *conditioning inputs*
  it declares in :attr:`Architecture.condition_inputs` (a Task Palette, ...).
* :attr:`Architecture.output_adapter` turns the raw outputs into ``{task: [B, C_t, H, W]}``
  plus per-task supervision masks (identity by default; the composite adapter decodes one
  shared 3-channel output into every task).
* :attr:`Architecture.auxiliary_outputs`: training-only outputs ``"<task>@<tag>"`` at any
  resolution, resized by the task (``Task.resize_output``) and added to the task's loss with
  their weight. In evaluation mode a model returns none.
* :meth:`Architecture.evaluation_plan`: which forward passes evaluate which tasks (one pass
  for all tasks, one pass per task with a uniform condition, one per palette rule).
"""

from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from densetasks.data.sample import LabelKind
from densetasks.errors import ConfigError

Batch = Mapping[str, Any]
"""A collated batch: ``image``, labels by task name, conditioning inputs by name, ``meta``."""


@dataclass(frozen=True)
class FeatureSpec:
    """One encoder feature map: its channel count and its stride w.r.t. the input."""

    channels: int
    stride: int


class Encoder(nn.Module, metaclass=ABCMeta):
    """Feature maps shallow to deep, one per stage, described by :attr:`feature_info`.

    Stage ``k`` maps the output of stage ``k - 1`` (the image for ``k = 0``) to feature
    ``k``. :meth:`forward_stages` runs a contiguous range of stages, so
    ``forward_stages(forward_stages(image, 0, k)[-1], k, None)`` equals the deeper part of
    ``forward(image)``: an architecture can share stages ``0..k-1`` and branch after them.
    """

    feature_info: list[FeatureSpec]
    factory: Callable[[], "Encoder"] | None = None
    """Builds another encoder the way this one was built (set by ``create_encoder``)."""
    token_channels: int | None = None
    """The width of :meth:`forward_tokens`' maps; ``None`` for an encoder without a token grid."""

    def rebuild(self) -> "Encoder":
        """Another encoder built the way this one was: fresh random weights, or the same
        pretrained ones. For architectures with one encoder per task (CompositeTasking's
        multi-network baseline), which are handed one encoder like every architecture."""
        if self.factory is None:
            raise ValueError(
                f"{type(self).__name__} was not built by create_encoder and cannot be rebuilt"
            )
        return self.factory()

    @abstractmethod
    def forward_stages(
        self, inputs: torch.Tensor, start: int = 0, end: int | None = None
    ) -> list[torch.Tensor]:
        """Run stages ``start .. end - 1`` (``end=None``: to the last) on ``inputs``.

        ``inputs`` is the image for ``start == 0``, else the feature of stage ``start - 1``.
        Returns the features of the stages run, shallow to deep.
        """

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's feature map, shallow to deep, as :attr:`feature_info` describes."""
        return self.forward_stages(image, 0, None)

    def parameter_layers(self) -> tuple[dict[str, int], int]:
        """``({parameter name: depth}, top)`` for layer-wise learning-rate decay: depth 0 at
        the input, ``top`` for what sits above the encoder (see ``engine/optim.py``)."""
        raise ConfigError(
            f"{type(self).__name__} does not number its layers (train.layer_decay needs that)"
        )

    def no_weight_decay(self) -> set[str]:
        """Parameters besides norms and biases that take no weight decay with
        ``train.selective_decay`` (position embeddings, tokens)."""
        return set()

    def set_input_size(self, size: tuple[int, int]) -> None:
        """Specialise to inputs of ``size`` (H, W) without changing any output at that size
        (ONNX export fixes the size). Most encoders have nothing to do."""

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in the backward pass instead of storing them."""
        raise ConfigError(f"{type(self).__name__} has no gradient checkpointing")

    def forward_stage_blocks(
        self, inputs: torch.Tensor, stage: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run stage ``stage`` on ``inputs`` like :meth:`forward_stages` and return its feature
        before its last block and its output (the second equals ``forward_stages(inputs,
        stage, stage + 1)[0]``). MTAN (Liu, Johns & Davison, CVPR 2019) computes each attention
        mask from the first and applies it to the second. An encoder that cannot split its
        stages says so here."""
        raise ConfigError(
            f"encoder {type(self).__name__} cannot split a stage before its last block "
            "(Encoder.forward_stage_blocks), which MTAN needs"
        )

    def forward_tokens(self, image: torch.Tensor) -> list[torch.Tensor]:
        """A plain ViT's patch tokens at the blocks its levels are read from, shallow to deep,
        as ``[B, token_channels, H / patch, W / patch]`` maps: no prefix tokens, no resampling
        to the pyramid's strides. InvPT (Ye & Xu, ECCV 2022) decodes these. An encoder without
        a token grid says so here."""
        raise ConfigError(
            f"encoder {type(self).__name__} has no token grid (Encoder.forward_tokens), which "
            "InvPT needs: choose a plain ViT such as vit_large_patch16_384 or test_vit"
        )


@dataclass(frozen=True)
class ConditionInput:
    """A per-pixel input that an architecture's ``forward`` takes besides the image.

    ``kind`` decides how transforms flip, crop and resize it and how collate pads it, like a
    label's (a Task Palette is a ``MASK`` of task ids, ``IGNORE_INDEX`` meaning "no task").
    ``sample(batch, generator)``, when given, draws the input for a training batch that does
    not carry it (palette rules resampled every batch); the engine seeds ``generator`` from
    ``(seed, step)`` so a resumed run draws the same conditions.
    """

    name: str
    kind: LabelKind
    sample: Callable[[Batch, torch.Generator], torch.Tensor] | None = None


@dataclass(frozen=True)
class AuxiliaryOutput:
    """A training-only output ``"<task>@<tag>"`` supervised by ``task``'s label and loss.

    The engine resizes it to the label with ``Task.resize_output`` and adds
    ``weight * task.loss(...)`` to that task's loss (intermediate-scale supervision, deep
    supervision of decoder stages).
    """

    task: str
    tag: str
    weight: float

    @property
    def key(self) -> str:
        return f"{self.task}@{self.tag}"


@dataclass
class AdaptedOutputs:
    """Model outputs in every task's own format, and where each task is supervised.

    ``outputs``: ``{task or "task@tag": [B, C_t, h, w]}``. ``masks``: ``{task: bool [B, H, W]}``
    for the tasks whose supervision (and evaluation) is restricted to some pixels; a task
    absent from ``masks`` is supervised wherever its label is valid.
    """

    outputs: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)


class OutputAdapter:
    """Identity: the architecture already returns ``{task: [B, C_t, H, W]}``."""

    def __call__(
        self,
        outputs: Mapping[str, torch.Tensor],
        tasks: Mapping[str, Any],
        conditions: Mapping[str, torch.Tensor],
    ) -> AdaptedOutputs:
        return AdaptedOutputs(dict(outputs))


@dataclass(frozen=True)
class UniformCondition:
    """A condition map filled with one value, shaped like the batch's image: ``[B, H, W]``.

    With a palette it asks a conditioned model for one task everywhere (paper rule "S").
    """

    value: int

    def __call__(self, batch: Batch) -> torch.Tensor:
        image = batch["image"]
        return torch.full(
            (image.shape[0], *image.shape[-2:]),
            self.value,
            dtype=torch.int64,
            device=image.device,
        )


@dataclass(frozen=True)
class EvaluationPass:
    """One forward pass of an evaluation: the conditions it is run with, the tasks it scores.

    ``conditions`` maps a condition input's name to a function of the batch that builds it;
    ``rule`` names the pass's palette rule (metrics are then also reported under the rule).
    """

    tasks: tuple[str, ...]
    conditions: Mapping[str, Callable[[Batch], torch.Tensor]] = field(default_factory=dict)
    rule: str | None = None


EvaluationPlan = list[EvaluationPass]
"""The passes that evaluate a model; every task is scored by exactly one pass without a rule."""


class Architecture(nn.Module, metaclass=ABCMeta):
    """Base of every multi-task architecture (single task, hard sharing, composite, ...).

    Subclasses set :attr:`condition_inputs`, :attr:`auxiliary_outputs` and
    :attr:`output_adapter` when they differ from the defaults (none, none, identity) and
    override :meth:`evaluation_plan` when one pass does not predict every task.
    """

    condition_inputs: tuple[ConditionInput, ...] = ()
    auxiliary_outputs: tuple[AuxiliaryOutput, ...] = ()
    output_adapter: OutputAdapter = OutputAdapter()

    def __init__(self, task_channels: dict[str, int]) -> None:
        super().__init__()
        self.task_channels = dict(task_channels)

    @abstractmethod
    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the (pre-trainable) encoder: their own learning rate group."""

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Everything else (bottleneck, decoders, heads)."""
        encoder = {id(p) for p in self.encoder_parameters()}
        return [p for p in self.parameters() if id(p) not in encoder]

    @abstractmethod
    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters every task's loss reaches, but a task's own branch; in data-flow
        order. Gradient-combining balancers combine the tasks' gradients on these (every
        other parameter takes the sum of its gradients) and GradNorm measures on the last
        of them (:meth:`last_shared_layer`).

        A parameter is shared when the loss of every task the model predicts (its main and
        auxiliary outputs) reaches it — so partial sharing lists everything up to where the
        tasks' paths part: a hard-sharing network its encoder and bottleneck, network
        fission also the decoder stages before its split, a cross-stitch network with units
        after some stages only every column up to its last unit and the units (after the
        last unit each column is its task's own). The exception is a task's own branch that
        other tasks only read: the intermediate predictions of cross-task distillation
        (PAD-Net, the 3-ways mTEB; Lopes et al., WACV 2023) reach every task's loss through
        the distillation, but only their own task supervises them (they are that task's
        auxiliary outputs), so they are that task's, not shared. A network of one task
        lists what it would share with others (its encoder and bottleneck).
        ``tests/models/test_shared_parameters.py`` checks this for every registered
        architecture.
        """

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The weight(s) W of the last shared layer: GradNorm (Chen et al., ICML 2018) measures
        each task's gradient norm on W, so it must be a layer every task's output goes through.

        Default: the last parameter of :meth:`shared_parameters` with two or more dimensions
        (a convolution's or linear layer's weight, never a bias or a normalisation's scale).
        Override it when that order is not the data flow or when the last shared layer is
        several parallel convolutions whose outputs are concatenated.
        """
        weights = [parameter for parameter in self.shared_parameters() if parameter.dim() > 1]
        if not weights:
            raise ValueError(f"{type(self).__name__} has no shared layer with a weight matrix")
        return weights[-1:]

    def evaluation_plan(self) -> EvaluationPlan:
        """One unconditioned pass that predicts every task (override for conditioned models)."""
        return [EvaluationPass(tuple(self.task_channels))]


def per_task_plan(tasks: Sequence[str], condition: str) -> EvaluationPlan:
    """One pass per task with ``condition`` filled with the task's index (its palette id)."""
    return [
        EvaluationPass((task,), {condition: UniformCondition(index)})
        for index, task in enumerate(tasks)
    ]
