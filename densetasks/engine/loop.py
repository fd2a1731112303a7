"""The visible step: forward under autocast, per-task losses, balancer backward, clip, step.

Functions, not a trainer class (torchvision ``references/segmentation/train.py`` style):
:func:`task_losses` turns model outputs into ``{task: loss}`` (auxiliary ``"task@tag"``
outputs resized to the label and weighted by ``aux_weights[tag]``), :func:`train_step` does
one optimisation step, :func:`evaluate` accumulates every task's metric over a loader.
The engine never names a task: everything iterates the ``tasks`` mapping.
"""

import contextlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from densetasks.balancers.base import Balancer
from densetasks.engine.distributed import (
    ProcessInfo,
    all_reduce_mean,
    all_reduce_metric,
    average_gradients,
)
from densetasks.engine.optim import LearningRateSchedule
from densetasks.errors import TrainingError
from densetasks.metrics.base import Metric
from densetasks.tasks.base import Task, evaluation_inputs

Batch = dict[str, Any]


@dataclass
class StepParts:
    """Everything one training step touches."""

    model: nn.Module
    """The model as called (possibly the DDP wrapper)."""
    tasks: Mapping[str, Task]
    balancer: Balancer
    optimizer: torch.optim.Optimizer
    schedule: LearningRateSchedule
    scaler: torch.amp.GradScaler
    shared_parameters: list[nn.Parameter]
    aux_weights: Mapping[str, float]
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    clip_grad_norm: float | None
    process: ProcessInfo


@dataclass
class StepResult:
    losses: dict[str, float]
    total: float


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision when ``dtype`` is set (the caller allows it on CUDA only)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(batch: Batch, device: torch.device, channels_last: bool = False) -> Batch:
    """Move every tensor of a collated batch; ``meta`` stays as it is."""
    moved = {
        key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        for key, value in batch.items()
    }
    if channels_last:
        moved["image"] = moved["image"].contiguous(memory_format=torch.channels_last)
    return moved


def task_losses(
    tasks: Mapping[str, Task],
    outputs: Mapping[str, torch.Tensor],
    batch: Batch,
    aux_weights: Mapping[str, float],
) -> dict[str, torch.Tensor]:
    """``{task: loss}`` in float32, main output plus weighted auxiliary outputs.

    A task without a label in this batch gets a zero loss that still reaches its head, so
    every parameter takes part in the backward pass (DDP needs that).
    """
    losses: dict[str, torch.Tensor] = {}
    for name, task in tasks.items():
        output = outputs[name].float()
        if name not in batch:
            losses[name] = output.sum() * 0.0
            continue
        label = batch[name]
        loss = task.loss(output, label)
        for key, aux in outputs.items():
            aux_task, separator, tag = key.partition("@")
            if separator and aux_task == name:
                resized = F.interpolate(
                    aux.float(), size=label.shape[-2:], mode="bilinear", align_corners=False
                )
                loss = loss + aux_weights[tag] * task.loss(resized, label)
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


def train_step(parts: StepParts, batch: Batch, step: int) -> StepResult:
    """One optimisation step on one (already on-device) batch."""
    parts.model.train()
    with autocast(parts.device, parts.amp_dtype):
        outputs = parts.model(batch["image"])
    losses = task_losses(parts.tasks, outputs, batch, parts.aux_weights)
    stacked = torch.stack([loss.detach() for loss in losses.values()])
    values = all_reduce_mean(stacked, parts.process)
    loss_values = dict(zip(losses, values.tolist(), strict=True))
    check_finite(loss_values, step)

    parts.optimizer.zero_grad(set_to_none=True)
    total = parts.balancer.backward(losses, parts.shared_parameters, scale=parts.scaler.scale)
    average_gradients(parts.balancer.parameters(), parts.process)
    if parts.clip_grad_norm is not None:
        parts.scaler.unscale_(parts.optimizer)
        parameters = _optimised_parameters(parts.optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, parts.clip_grad_norm)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.schedule.step()
    return StepResult(losses=loss_values, total=float(total))


def _optimised_parameters(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    return [parameter for group in optimizer.param_groups for parameter in group["params"]]


@torch.no_grad()
def predict(
    model: nn.Module, image: torch.Tensor, device: torch.device, amp_dtype: torch.dtype | None
) -> dict[str, torch.Tensor]:
    """Raw outputs in float32 (evaluation mode)."""
    model.eval()
    with autocast(device, amp_dtype):
        outputs = model(image)
    return {key: value.float() for key, value in outputs.items()}


def evaluate(
    model: nn.Module,
    tasks: Mapping[str, Task],
    batches: Iterable[Batch],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    process: ProcessInfo = ProcessInfo(),
) -> dict[str, Metric]:
    """Every task's metric over ``batches`` (this process's shard), summed over processes."""
    metrics = {name: task.metrics() for name, task in tasks.items()}
    for batch in batches:
        batch = to_device(batch, device, channels_last)
        outputs = predict(model, batch["image"], device, amp_dtype)
        predictions = evaluation_inputs(tasks, outputs)
        for name in tasks:
            if name in batch:
                metrics[name].update(predictions[name].cpu(), batch[name].cpu())
    for metric in metrics.values():
        all_reduce_metric(metric, process)
    return metrics
