"""The visible step: forward under autocast, per-task losses, balancer backward, clip, step.

Functions, not a trainer class (torchvision ``references/segmentation/train.py`` style):
:func:`task_losses` turns adapted model outputs into ``{task: loss}`` (with the supervision
masks the adapter gives and the architecture's weighted auxiliary outputs, resized by their
task), :func:`train_step` does one optimisation step, :func:`evaluate` accumulates every
task's metric over a loader following the architecture's evaluation plan.
With a :class:`~densetasks.engine.adversarial.DomainAdversary` (multi-task domain
adaptation) a step forwards source and target images as one mixed batch, adds the
adversarial loss on the target rows and then steps the discriminators.
The engine never names a task: everything iterates the ``tasks`` mapping.
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from densetasks.balancers.base import Balancer
from densetasks.engine.adversarial import DomainAdversary
from densetasks.engine.config import TrainConfig
from densetasks.engine.distributed import (
    ProcessInfo,
    all_reduce_mean,
    all_reduce_metric,
    average_gradients,
)
from densetasks.engine.optim import LearningRateSchedule
from densetasks.engine.passes import Batch, autocast, condition_inputs, forward, run_plan, to_device
from densetasks.engine.sampling import sample_seed
from densetasks.errors import TrainingError
from densetasks.metrics.base import Metric
from densetasks.models.base import AdaptedOutputs, Architecture, AuxiliaryOutput
from densetasks.tasks.base import Task, metric_inputs


@dataclass
class StepParts:
    """Everything one training step touches."""

    model: nn.Module
    """The model as called (possibly the DDP wrapper of ``architecture``)."""
    architecture: Architecture
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
    adversary: DomainAdversary | None = None
    """Discriminators of a domain-adaptation run; then every step also takes a target batch."""

    @classmethod
    def on_cpu(
        cls,
        architecture: nn.Module,
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
        ``seed`` or ``adversary``."""
        return cls(
            model=architecture,
            architecture=architecture,
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


@dataclass
class StepResult:
    losses: dict[str, float]
    total: float
    adaptation: dict[str, float] = field(default_factory=dict)
    """``adversarial`` (λ-weighted, on the network) and ``discriminator`` losses, if adapting."""


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
    """One optimisation step on one (already on-device) batch.

    With ``parts.adversary``, ``batch[TARGET_IMAGES]`` holds the step's target-domain images:
    the model sees ``[source; target]`` in one forward, the task losses read the source rows
    only, the adversarial loss the target rows.
    """
    target_images = batch.get(TARGET_IMAGES)
    if (parts.adversary is None) != (target_images is None):
        raise ValueError(f"a batch has {TARGET_IMAGES!r} exactly when the step has an adversary")
    parts.model.train()
    generator = None
    if parts.architecture.condition_inputs:
        generator = torch.Generator().manual_seed(sample_seed(parts.seed, step))
    conditions = condition_inputs(parts.architecture, batch, generator)
    sources = batch["image"].shape[0]
    inputs = batch
    if target_images is not None:
        inputs = {"image": torch.cat([batch["image"], target_images])}
    with autocast(parts.device, parts.amp_dtype):
        mixed = forward(parts.model, parts.architecture, parts.tasks, inputs, conditions)
    adapted = mixed if target_images is None else _rows(mixed, sources)
    losses = task_losses(parts.tasks, adapted, batch, parts.architecture.auxiliary_outputs)
    stacked = torch.stack([loss.detach() for loss in losses.values()])
    values = all_reduce_mean(stacked, parts.process)
    loss_values = dict(zip(losses, values.tolist(), strict=True))
    check_finite(loss_values, step)

    parts.optimizer.zero_grad(set_to_none=True)
    adaptation: dict[str, float] = {}
    if parts.adversary is not None:
        maps = parts.adversary.maps(mixed.outputs, batch, sources)
        adversarial = parts.adversary.generator_loss(maps)
        adaptation["adversarial"] = float(adversarial.detach())
        check_finite(adaptation, step)
        parts.scaler.scale(adversarial).backward(retain_graph=True)
    total = parts.balancer.backward(losses, parts.shared_parameters, scale=parts.scaler.scale)
    average_gradients(parts.balancer.parameters(), parts.process)
    if parts.clip_grad_norm is not None:
        parts.scaler.unscale_(parts.optimizer)
        parameters = _optimised_parameters(parts.optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, parts.clip_grad_norm)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.schedule.step()
    if parts.adversary is not None:
        adaptation["discriminator"] = parts.adversary.discriminator_step(maps, step)
    return StepResult(losses=loss_values, total=float(total), adaptation=adaptation)


def _rows(adapted: AdaptedOutputs, count: int) -> AdaptedOutputs:
    """The first ``count`` rows (the source images) of every output and mask."""
    return AdaptedOutputs(
        {key: value[:count] for key, value in adapted.outputs.items()},
        {key: value[:count] for key, value in adapted.masks.items()},
    )


def _optimised_parameters(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    return [parameter for group in optimizer.param_groups for parameter in group["params"]]


@dataclass
class Evaluation:
    """Every task's metric, and per palette rule when the evaluation plan has rules."""

    metrics: dict[str, Metric]
    by_rule: dict[str, dict[str, Metric]]


def evaluate(
    model: nn.Module,
    architecture: Architecture,
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
    plan = architecture.evaluation_plan()
    rules = [evaluation_pass.rule for evaluation_pass in plan if evaluation_pass.rule]
    evaluation = Evaluation(
        {name: task.metrics() for name, task in tasks.items()},
        {rule: {name: task.metrics() for name, task in tasks.items()} for rule in rules},
    )
    for batch in batches:
        batch = to_device(batch, device, channels_last)
        outputs = run_plan(model, architecture, tasks, batch, plan, device, amp_dtype)
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
