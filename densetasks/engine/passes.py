"""Forward passes as the model contract says: conditioning inputs in, adapted outputs out.

Training, evaluation and the :class:`~densetasks.engine.inference.Predictor` all call a model
through these functions, so a conditioned model (a Task Palette), an output adapter (the
composite space) and an evaluation plan (one pass per task or per palette rule) work the
same everywhere.
"""

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from densetasks.errors import DataError
from densetasks.models.base import AdaptedOutputs, Architecture, EvaluationPass

Batch = dict[str, Any]


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


def condition_inputs(
    architecture: Architecture,
    batch: Mapping[str, Any],
    generator: torch.Generator | None = None,
    overrides: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The conditioning inputs ``architecture`` declares, for one batch.

    Each comes from ``overrides`` (an evaluation pass, a user's palette), else from the
    batch, else, when a ``generator`` is given and the input has a sampler, is drawn for the
    batch (training). A missing one is a :class:`DataError` naming it.
    """
    overrides = overrides or {}
    conditions = {}
    for spec in architecture.condition_inputs:
        if spec.name in overrides:
            conditions[spec.name] = overrides[spec.name]
        elif spec.name in batch:
            conditions[spec.name] = batch[spec.name]
        elif spec.sample is not None and generator is not None:
            conditions[spec.name] = spec.sample(batch, generator).to(batch["image"].device)
        else:
            raise DataError(
                f"the model needs the conditioning input {spec.name!r} ({spec.kind.value} "
                f"[B, H, W]) and this batch has none; give it in the samples or as an "
                f"argument (densetasks predict --condition {spec.name}=PNG)"
            )
    return conditions


def architecture_of(model: nn.Module) -> Architecture:
    """The architecture a called model is: itself, or what ``DistributedDataParallel`` wraps."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def forward(
    model: nn.Module,
    tasks: Mapping[str, Any],
    batch: Mapping[str, Any],
    conditions: Mapping[str, torch.Tensor],
) -> AdaptedOutputs:
    """``model(image, **conditions)`` then the architecture's output adapter; ``model`` is
    an architecture or its DDP wrapper (training under torchrun)."""
    raw = model(batch["image"], **conditions)
    return architecture_of(model).output_adapter(raw, tasks, conditions)


@dataclass
class PlanOutputs:
    """The outputs of every pass of an evaluation plan on one batch, in float32.

    ``main``: every task's output (and mask) from the passes without a rule, merged;
    ``by_rule``: for each palette rule, the outputs of its pass.
    """

    main: AdaptedOutputs
    by_rule: dict[str, AdaptedOutputs] = field(default_factory=dict)


@torch.no_grad()
def run_plan(
    model: Architecture,
    tasks: Mapping[str, Any],
    batch: Mapping[str, Any],
    plan: list[EvaluationPass],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    stack: bool = False,
) -> PlanOutputs:
    """Run every pass of ``plan`` (evaluation mode) and keep each task's outputs.

    Only task outputs are kept: auxiliary ``"task@tag"`` outputs are training-only. With
    ``stack`` the passes without a rule run as one forward (:func:`_stacked_passes`): one
    call on ``P`` copies of the batch instead of ``P`` calls, the same outputs for ``P``
    times the memory, so evaluation of whole batches keeps one pass at a time.
    """
    model.eval()
    result = PlanOutputs(AdaptedOutputs({}))
    if stack:
        stacked = [each for each in plan if each.rule is None]
        if len(stacked) > 1:
            with autocast(device, amp_dtype):
                kept = _stacked_passes(model, tasks, batch, stacked)
            result.main.outputs.update(kept.outputs)
            result.main.masks.update(kept.masks)
            plan = [each for each in plan if each.rule is not None]
    for evaluation_pass in plan:
        built = {name: build(batch) for name, build in evaluation_pass.conditions.items()}
        conditions = condition_inputs(model, batch, overrides=built)
        with autocast(device, amp_dtype):
            adapted = forward(model, tasks, batch, conditions)
        names = tasks if evaluation_pass.rule is not None else evaluation_pass.tasks
        kept = _keep(adapted, names)
        if evaluation_pass.rule is None:
            result.main.outputs.update(kept.outputs)
            result.main.masks.update(kept.masks)
        else:
            result.by_rule[evaluation_pass.rule] = kept
    return result


def _stacked_passes(
    model: Architecture,
    tasks: Mapping[str, Any],
    batch: Mapping[str, Any],
    passes: list[EvaluationPass],
) -> AdaptedOutputs:
    """The task outputs of ``passes`` from one forward: the batch's tensors repeated once per
    pass along the batch dimension, each copy with its pass's conditions (rule S of a
    CompositeTasking model: the palette filled with a different task's id per copy). In
    evaluation mode every sample is computed on its own, so each copy's outputs are the
    pass's own."""
    size = batch["image"].shape[0]
    conditions = [
        condition_inputs(
            model,
            batch,
            overrides={name: build(batch) for name, build in each.conditions.items()},
        )
        for each in passes
    ]
    repeated = {
        key: value.repeat(len(passes), *([1] * (value.dim() - 1)))
        if isinstance(value, torch.Tensor) and value.dim() > 0
        else value
        for key, value in batch.items()
    }
    joined = {name: torch.cat([each[name] for each in conditions]) for name in conditions[0]}
    adapted = forward(model, tasks, repeated, joined)
    merged = AdaptedOutputs({})
    for index, each in enumerate(passes):
        rows = slice(index * size, (index + 1) * size)
        piece = AdaptedOutputs(
            {name: output[rows] for name, output in adapted.outputs.items()},
            {name: mask[rows] for name, mask in adapted.masks.items()},
        )
        kept = _keep(piece, each.tasks)
        merged.outputs.update(kept.outputs)
        merged.masks.update(kept.masks)
    return merged


def _keep(adapted: AdaptedOutputs, names: Any) -> AdaptedOutputs:
    missing = [name for name in names if name not in adapted.outputs]
    if missing:
        raise ValueError(
            f"the model returned no output for task(s) {missing} in an evaluation pass that "
            f"scores them; it returned {sorted(adapted.outputs)}"
        )
    return AdaptedOutputs(
        {name: adapted.outputs[name].float() for name in names},
        {name: mask for name, mask in adapted.masks.items() if name in names},
    )
