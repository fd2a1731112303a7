"""Output-level adversarial domain adaptation for multi-task networks (MTL-UDA).

Lopes et al. (WACV 2023, Sec. 4.5, Supp. B.3, Fig. 8): one patch discriminator per task
and per supervised scale sees each output through the task's
:meth:`~densetasks.tasks.base.Task.discriminator_input` map. On a mixed batch (source images
first, then target images) the discriminators learn

``L_D = mean BCE(D(Q_src), 1) + mean BCE(D(Q_trg), 0)``  (Supp. eq. 7)

and the network learns to fool them on the target,

``L_adv = mean BCE(D(Q_trg), 1)``  (Supp. eq. 8),

added to the task losses as ``1/|S| Σ_s Σ_t λ_adv L_adv,t^s + Σ_t λ_adv L_adv,t^final``
(Supp. eq. 9): an auxiliary output ``"<task>@<tag>"`` weighs its adversarial loss by its
``AuxiliaryOutput.weight`` (``1/|S|`` with multi-scale supervision), a final output by 1.
Discriminators see every output resized to the image (as the authors' code does), so a
1/2-resolution side output meets a discriminator of the same depth.

The discriminators have their own Adam (the code's lr 1e-4, β = (0.9, 0.99), poly decay with
power 0.9 over the run); the engine checkpoints them and their optimiser with the run.
``adaptation.discriminator_width`` is the code's ``ndf`` (64: widths 64-128-256-512).
The engine never names a task here either: everything iterates the tasks and the
architecture's declared outputs.

:class:`AdaptationStep` is the training step of such a run (a step strategy of
:mod:`densetasks.engine.loop`): the model sees ``[source; target]`` in one forward, the task
losses read the source rows only, the adversarial loss the target rows, then the
discriminators take their own step.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from densetasks.engine.config import AdaptationConfig
from densetasks.engine.loop import (
    TARGET_IMAGES,
    StepParts,
    StepResult,
    apply_gradients,
    check_finite,
    checked_losses,
)
from densetasks.engine.passes import Batch, autocast, forward
from densetasks.models.base import AdaptedOutputs, Architecture
from densetasks.models.discriminators import PatchDiscriminator
from densetasks.tasks.base import Task

SOURCE, TARGET = 1.0, 0.0
"""Discriminator labels of the two domains (Supp. eqs. 7-8)."""


@dataclass(frozen=True)
class AlignedOutput:
    """One model output that a discriminator aligns: ``key`` in the outputs, its task and
    the weight of its adversarial loss (1 for a final output)."""

    key: str
    task: str
    weight: float


def aligned_outputs(tasks: Mapping[str, Task], architecture: Architecture) -> list[AlignedOutput]:
    """Every task's final output and each of its declared auxiliary (per-scale) outputs."""
    aligned = []
    for name in tasks:
        aligned.append(AlignedOutput(name, name, 1.0))
        aligned.extend(
            AlignedOutput(aux.key, name, aux.weight)
            for aux in architecture.auxiliary_outputs
            if aux.task == name
        )
    return aligned


@dataclass
class AdversarialMaps:
    """Discriminator inputs of one mixed batch, split by domain: ``{output key: map}``."""

    source: dict[str, torch.Tensor]
    target: dict[str, torch.Tensor]


class DomainAdversary(nn.Module):
    """The discriminators of one run, their optimiser, and the two adversarial losses."""

    def __init__(
        self,
        tasks: Mapping[str, Task],
        architecture: Architecture,
        config: AdaptationConfig,
        steps: int,
    ) -> None:
        super().__init__()
        self.tasks = dict(tasks)
        self.aligned = aligned_outputs(tasks, architecture)
        width = config.discriminator_width
        widths = (width, 2 * width, 4 * width, 8 * width)
        self.discriminators = nn.ModuleDict(
            {out.key: PatchDiscriminator(tasks[out.task].channels, widths) for out in self.aligned}
        )
        self.lambda_adv = config.lambda_adv
        self.base_lr = config.discriminator_lr
        self.power = config.discriminator_power
        self.steps = steps
        self.optimizer = torch.optim.Adam(
            self.discriminators.parameters(),
            lr=config.discriminator_lr,
            betas=config.discriminator_betas,
        )

    def maps(
        self, outputs: Mapping[str, torch.Tensor], source: Mapping[str, Any], sources: int
    ) -> AdversarialMaps:
        """Discriminator inputs of a mixed batch's ``outputs`` whose first ``sources`` rows
        are the source images of the batch ``source`` (whose labels set ranges)."""
        size = tuple(source["image"].shape[-2:])
        source_maps, target_maps = {}, {}
        for out in self.aligned:
            task = self.tasks[out.task]
            output = outputs[out.key].float()
            if tuple(output.shape[-2:]) != size:
                output = task.resize_output(output, size)
            mapped = task.discriminator_input(output, task.target(source))
            source_maps[out.key], target_maps[out.key] = mapped[:sources], mapped[sources:]
        return AdversarialMaps(source_maps, target_maps)

    def generator_loss(self, maps: AdversarialMaps) -> torch.Tensor:
        """``Σ_outputs weight · λ_adv · BCE(D(Q_trg), source)``: what the network minimises
        to make target outputs look like source ones. No gradient reaches the discriminators."""
        self.discriminators.requires_grad_(False)
        try:
            terms = [
                out.weight * _bce(self.discriminators[out.key](maps.target[out.key]), SOURCE)
                for out in self.aligned
            ]
        finally:
            self.discriminators.requires_grad_(True)
        return self.lambda_adv * torch.stack(terms).sum()

    def discriminator_step(self, maps: AdversarialMaps, step: int) -> float:
        """One Adam step of every discriminator on the detached maps at ``step`` (0-based);
        returns ``Σ_D L_D``."""
        self.optimizer.zero_grad(set_to_none=True)
        terms = []
        for out in self.aligned:
            discriminator = self.discriminators[out.key]
            terms.append(_bce(discriminator(maps.source[out.key].detach()), SOURCE))
            terms.append(_bce(discriminator(maps.target[out.key].detach()), TARGET))
        loss = torch.stack(terms).sum()
        loss.backward()
        factor = max(0.0, 1.0 - step / self.steps) ** self.power
        for group in self.optimizer.param_groups:
            group["lr"] = self.base_lr * factor
        self.optimizer.step()
        return float(loss.detach())

    def state_dict_with_optimizer(self) -> dict[str, Any]:
        """Discriminator weights (spectral-norm vectors included) and their Adam state."""
        return {"discriminators": self.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict_with_optimizer(self, state: Mapping[str, Any]) -> None:
        self.load_state_dict(state["discriminators"])
        self.optimizer.load_state_dict(state["optimizer"])


@dataclass
class AdaptationStep:
    """The training step of a domain-adaptation run (a step strategy: ``StepParts.strategy``).

    ``batch[TARGET_IMAGES]`` holds the step's target-domain images; the network's gradient is
    that of the adversarial loss plus the balancer's on the source task losses.
    """

    adversary: DomainAdversary

    def __call__(self, parts: StepParts, batch: Batch, step: int) -> StepResult:
        if TARGET_IMAGES not in batch:
            raise ValueError(f"a domain-adaptation step needs {TARGET_IMAGES!r} in the batch")
        parts.model.train()
        sources = batch["image"].shape[0]
        inputs = {"image": torch.cat([batch["image"], batch[TARGET_IMAGES]])}
        with autocast(parts.device, parts.amp_dtype):
            mixed = forward(parts.model, parts.tasks, inputs, {})
        losses, values = checked_losses(parts, _rows(mixed, sources), batch, step)
        parts.optimizer.zero_grad(set_to_none=True)
        maps = self.adversary.maps(mixed.outputs, batch, sources)
        adversarial = self.adversary.generator_loss(maps)
        adaptation = {"adversarial": float(adversarial.detach())}
        check_finite(adaptation, step)
        parts.scaler.scale(adversarial).backward(retain_graph=True)
        total = parts.balancer.backward(losses, parts.shared_parameters, scale=parts.scaler.scale)
        apply_gradients(parts)
        adaptation["discriminator"] = self.adversary.discriminator_step(maps, step)
        return StepResult(losses=values, total=float(total), adaptation=adaptation)


def _rows(adapted: AdaptedOutputs, count: int) -> AdaptedOutputs:
    """The first ``count`` rows (the source images) of every output and mask."""
    return AdaptedOutputs(
        {key: value[:count] for key, value in adapted.outputs.items()},
        {key: value[:count] for key, value in adapted.masks.items()},
    )


def _bce(logits: torch.Tensor, label: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))
