"""The visible step: forward under autocast, per-task losses, balancer backward, clip, step.

Functions, not a trainer class (torchvision ``references/segmentation/train.py`` style):
:func:`train_step` does one optimisation step and reads top to bottom (conditions, forward,
:func:`task_losses`, the balancer's backward, :func:`apply_gradients`); :func:`evaluate`
accumulates every task's metric over a loader following the architecture's evaluation plan.
A run that adapts to a target domain swaps the step for another *step strategy*
(:class:`~densetasks.engine.adversarial.AdaptationStep`) built from the same pieces.
The engine never names a task: everything iterates the ``tasks`` mapping.
"""

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from densetasks.balancers.base import Balancer
from densetasks.engine.config import TrainConfig
from densetasks.engine.distributed import (
    ProcessInfo,
    all_reduce_mean,
    all_reduce_metric,
    average_gradients,
)
from densetasks.engine.optim import LearningRateSchedule
from densetasks.engine.passes import (
    Batch,
    architecture_of,
    autocast,
    condition_inputs,
    forward,
    run_plan,
    to_device,
)
from densetasks.engine.sampling import sample_seed
from densetasks.errors import TrainingError
from densetasks.metrics.base import Metric
from densetasks.models.base import AdaptedOutputs, Architecture, AuxiliaryOutput
from densetasks.tasks.base import Task, metric_inputs


@dataclass
class StepResult:
    losses: dict[str, float]
    total: float
    adaptation: dict[str, float] = field(default_factory=dict)
    """``adversarial`` (λ-weighted, on the network) and ``discriminator`` losses, if adapting."""


StepStrategy = Callable[["StepParts", Batch, int], StepResult]
"""One optimisation step on ``(parts, batch, step)``: :func:`supervised_step` or a run's
other strategy (domain adaptation)."""


@dataclass
class StepParts:
    """Everything one training step touches."""

    model: nn.Module
    """The model as called: an architecture, or its DDP wrapper under torchrun."""
    tasks: Mapping[str, Task]
    balancer: Balancer
    optimizer: torch.optim.Optimizer
    schedule: LearningRateSchedule
    scaler: torch.amp.GradScaler
    shared_parameters: list[nn.Parameter]
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    clip_grad_norm: float | None
    process: ProcessInfo
    seed: int = 0
    """Seeds the conditions drawn for a batch (palette rules) together with the step."""
    strategy: StepStrategy | None = None
    """How a step is taken; ``None``: :func:`supervised_step`."""

    @property
    def architecture(self) -> Architecture:
        return architecture_of(self.model)

    @classmethod
    def on_cpu(
        cls,
        architecture: Architecture,
        tasks: Mapping[str, Task],
        balancer: Balancer,
        optimizer: torch.optim.Optimizer,
        train: TrainConfig,
        shared_parameters: list[nn.Parameter] | None = None,
        **extra: Any,
    ) -> "StepParts":
        """One process on the CPU in float32, the model called as it is (no DDP wrapper, no
        AMP, channels first): for code that drives :func:`train_step` itself, such as tests
        and benchmarks. ``shared_parameters`` default to the architecture's; ``extra`` sets
        ``seed`` or ``strategy``."""
        return cls(
            model=architecture,
            tasks=tasks,
            balancer=balancer,
            optimizer=optimizer,
            schedule=LearningRateSchedule(optimizer, train),
            scaler=torch.amp.GradScaler("cpu", enabled=False),
            shared_parameters=(
                architecture.shared_parameters() if shared_parameters is None else shared_parameters
            ),
            device=torch.device("cpu"),
            amp_dtype=None,
            channels_last=False,
            clip_grad_norm=train.clip_grad_norm,
            process=ProcessInfo(),
            **extra,
        )


def task_losses(
    tasks: Mapping[str, Task],
    adapted: AdaptedOutputs,
    batch: Batch,
    auxiliary: Sequence[AuxiliaryOutput] = (),
) -> dict[str, torch.Tensor]:
    """``{task: loss}`` in float32: the main output plus the weighted auxiliary outputs.

    Each loss is restricted to the task's supervision mask where the adapter gives one
    (``Task.loss(mask=...)``); an auxiliary output is brought to the label's size by
    ``Task.resize_output`` (offsets in pixels scale with the size, logits are bilinear). A
    task without a label in this batch gets a zero loss that still reaches its heads, so
    every parameter takes part in the backward pass (DDP needs that).
    """
    outputs = adapted.outputs
    undeclared = sorted(
        key for key in outputs if "@" in key and key not in {aux.key for aux in auxiliary}
    )
    if undeclared:
        raise ValueError(
            f"the model returned auxiliary output(s) {undeclared} that its architecture does "
            "not declare in auxiliary_outputs"
        )
    losses: dict[str, torch.Tensor] = {}
    for name, task in tasks.items():
        own_auxiliary = [aux for aux in auxiliary if aux.task == name]
        for aux in own_auxiliary:
            if aux.key not in outputs:
                raise ValueError(
                    f"the model declares auxiliary output {aux.key!r} but did not "
                    "return it in training mode"
                )
        output = outputs[name].float()
        label = task.target(batch)
        if label is None:
            unused = sum(outputs[aux.key].float().sum() for aux in own_auxiliary)
            losses[name] = (output.sum() + unused) * 0.0
            continue
        mask = adapted.masks.get(name)
        loss = task.loss(output, label, mask)
        for aux in own_auxiliary:
            resized = task.resize_output(outputs[aux.key].float(), tuple(label.shape[-2:]))
            loss = loss + aux.weight * task.loss(resized, label, mask)
        losses[name] = loss.float()
    return losses


def check_finite(losses: Mapping[str, float], step: int) -> None:
    """Raise :class:`TrainingError` naming every task whose loss is NaN or infinite."""
    bad = [f"{name}={value}" for name, value in losses.items() if not math.isfinite(value)]
    if bad:
        raise TrainingError(
            f"loss is not finite at step {step + 1} for task(s) {', '.join(bad)}; "
            "the last good checkpoint is kept (lower train.lr or set train.clip_grad_norm)"
        )


TARGET_IMAGES = "target_image"
"""Batch key of the target-domain images of a domain-adaptation step (images only: the
target's labels never enter a training batch)."""


def train_step(parts: StepParts, batch: Batch, step: int) -> StepResult:
    """One optimisation step on one (already on-device) batch, by the run's strategy."""
    return (parts.strategy or supervised_step)(parts, batch, step)


def supervised_step(parts: StepParts, batch: Batch, step: int) -> StepResult:
    """Forward, the task losses, the balancer's backward and the optimiser step."""
    if TARGET_IMAGES in batch:
        raise ValueError(f"a batch with {TARGET_IMAGES!r} needs the domain-adaptation step")
    parts.model.train()
    conditions = condition_inputs(parts.architecture, batch, step_generator(parts, step))
    with autocast(parts.device, parts.amp_dtype):
        adapted = forward(parts.model, parts.tasks, batch, conditions)
    losses, values = checked_losses(parts, adapted, batch, step)
    parts.optimizer.zero_grad(set_to_none=True)
    total = parts.balancer.backward(losses, parts.shared_parameters, scale=parts.scaler.scale)
    apply_gradients(parts)
    return StepResult(losses=values, total=float(total))


def step_generator(parts: StepParts, step: int) -> torch.Generator | None:
    """Draws a step's missing conditions (palette rules), seeded by ``(seed, step)`` so a
    resumed run draws the same; ``None`` for a model without conditioning inputs."""
    if not parts.architecture.condition_inputs:
        return None
    return torch.Generator().manual_seed(sample_seed(parts.seed, step))


def checked_losses(
    parts: StepParts, adapted: AdaptedOutputs, batch: Batch, step: int
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The step's task losses and their values averaged over processes, which must be
    finite (:func:`check_finite`)."""
    losses = task_losses(parts.tasks, adapted, batch, parts.architecture.auxiliary_outputs)
    stacked = torch.stack([loss.detach() for loss in losses.values()])
    values = dict(zip(losses, all_reduce_mean(stacked, parts.process).tolist(), strict=True))
    check_finite(values, step)
    return losses, values


def apply_gradients(parts: StepParts) -> None:
    """After the backward pass: the balancer's own gradients averaged over processes (DDP
    averages the model's), the gradient norm clipped, the (scaled) optimiser and the
    learning-rate schedule stepped."""
    average_gradients(parts.balancer.parameters(), parts.process)
    if parts.clip_grad_norm is not None:
        parts.scaler.unscale_(parts.optimizer)
        parameters = _optimised_parameters(parts.optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, parts.clip_grad_norm)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.schedule.step()


def _optimised_parameters(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    return [parameter for group in optimizer.param_groups for parameter in group["params"]]


@dataclass
class Evaluation:
    """Every task's metric, and per palette rule when the evaluation plan has rules."""

    metrics: dict[str, Metric]
    by_rule: dict[str, dict[str, Metric]]


def evaluate(
    model: Architecture,
    tasks: Mapping[str, Task],
    batches: Iterable[Batch],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    process: ProcessInfo | None = None,
) -> Evaluation:
    """Every task's metric over ``batches`` (this process's shard), summed over processes.

    The architecture's evaluation plan says which passes predict which task; a task's
    label is restricted to its supervision mask where a pass gives one (a palette rule
    scores each task on the pixels the palette assigns to it).
    """
    plan = model.evaluation_plan()
    rules = [evaluation_pass.rule for evaluation_pass in plan if evaluation_pass.rule]
    evaluation = Evaluation(
        {name: task.metrics() for name, task in tasks.items()},
        {rule: {name: task.metrics() for name, task in tasks.items()} for rule in rules},
    )
    for batch in batches:
        batch = to_device(batch, device, channels_last)
        outputs = run_plan(model, tasks, batch, plan, device, amp_dtype)
        _update(evaluation.metrics, tasks, outputs.main, batch)
        for rule, adapted in outputs.by_rule.items():
            _update(evaluation.by_rule[rule], tasks, adapted, batch)
    for metrics in (evaluation.metrics, *evaluation.by_rule.values()):
        for metric in metrics.values():
            all_reduce_metric(metric, process or ProcessInfo())
    return evaluation


def _update(
    metrics: Mapping[str, Metric],
    tasks: Mapping[str, Task],
    adapted: AdaptedOutputs,
    batch: Batch,
) -> None:
    predictions = metric_inputs(tasks, adapted.outputs)
    for name, task in tasks.items():
        if task.target(batch) is None:
            continue
        target = task.evaluation_target(batch, adapted.masks.get(name))
        metrics[name].update(predictions[name].cpu(), target.cpu())
