"""DB-MTL, Dual-Balancing Multi-Task Learning (Lin et al., arXiv:2308.12029, 2023, Algorithm 1).

Two balancings at once:

* loss scale: every task optimises ``log L_t`` instead of L_t (eq. 3), so a task's gradient
  does not grow with the units of its loss; the task-specific parameters get ∇ log L_t;
* gradient magnitude: on the shared parameters θ an EMA of each task's gradient,
  ``ĝ_t ← β_k ĝ_t + (1 − β_k) ∇_θ log L_t`` (eq. 4), is rescaled to the largest norm and
  summed: ``∇θ = Σ_t (max_i ‖ĝ_i‖ / ‖ĝ_t‖) ĝ_t`` (eq. 5).

β_k = β / k^σ at step k with β = 0.9 (option ``beta``) and σ = 0.5 (option ``beta_sigma``), the
EMA starting at 0, as in the authors' implementation in LibMTL, whose default σ is 0 (a constant
β_k); ``tests/balancers/test_libmtl_reference.py`` compares both σ with it. ``forward`` alone
returns ``Σ_t log L_t`` and reports 1/L_t (the weight of ∇L_t in it); ``backward`` reports the
scales ``max_i ‖ĝ_i‖ / ‖ĝ_t‖``. A task with a zero loss (no labels in the batch) is left out of
the step (no log of 0, its EMA kept, scale 0). Under ``torch.distributed`` the per-task
gradients are averaged over processes before the EMA, so every process keeps the same EMA (an
all-reduce of T × |θ|). The step count is checkpointed; the EMA (T × |θ| floats) is not, and
restarts from 0 after a resume.
"""

from collections.abc import Callable, Sequence

import torch
from torch import nn

from densetasks.balancers._common import (
    average_across_processes,
    backward_with_shared_update,
    ordered_losses,
    trainable_shared,
)
from densetasks.balancers.base import Balancer
from densetasks.errors import ConfigError
from densetasks.tasks.base import Task


class DBMTLBalancer(Balancer):
    """Log losses; shared gradients from per-task EMAs rescaled to the largest norm."""

    def __init__(self, tasks: Sequence[Task], beta: float = 0.9, beta_sigma: float = 0.5) -> None:
        super().__init__(tasks)
        if not 0 <= beta < 1:
            raise ConfigError(f"balancer option 'beta' must be in [0, 1), got {beta}")
        if beta_sigma < 0:
            raise ConfigError(f"balancer option 'beta_sigma' must be >= 0, got {beta_sigma}")
        self.beta = beta
        self.beta_sigma = beta_sigma
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("gradient_ema", None, persistent=False)

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """``Σ_t log L_t`` over the tasks with a non-zero loss."""
        stacked = torch.stack(ordered_losses(losses, self.task_names))
        present = stacked.detach() != 0
        logs = torch.where(present, stacked.clamp_min(torch.finfo(stacked.dtype).tiny).log(), 0)
        weights = torch.where(present, 1 / stacked.detach(), torch.zeros_like(stacked))
        self.last_weights = dict(zip(self.task_names, weights.tolist(), strict=True))
        return logs.sum()

    def backward(
        self,
        losses: dict[str, torch.Tensor],
        shared_parameters: Sequence[nn.Parameter],
        scale: Callable[[torch.Tensor], torch.Tensor] = lambda total: total,
    ) -> torch.Tensor:
        """Task-specific grads from ``scale(Σ log L_t)``; shared grads ``+= s · Σ_t α_t ĝ_t``.

        The per-task gradients are taken of the scaled log losses (fp16 stays in range) and
        divided by the loss scale s before entering the EMA.
        """
        total = self(losses)
        shared = trainable_shared(shared_parameters, "DB-MTL")
        loss_scale = float(scale(torch.ones((), device=total.device)))
        update, scales = self._shared_update(losses, shared, scale, loss_scale)
        pieces = update.split([parameter.numel() for parameter in shared])
        shaped = [
            piece.view_as(parameter).to(parameter.dtype)
            for piece, parameter in zip(pieces, shared, strict=True)
        ]
        backward_with_shared_update(total, shared, scale, shaped)
        self.last_weights = dict(zip(self.task_names, scales.tolist(), strict=True))
        return total.detach()

    def _shared_update(
        self,
        losses: dict[str, torch.Tensor],
        shared: list[nn.Parameter],
        scale: Callable[[torch.Tensor], torch.Tensor],
        loss_scale: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``s · Σ_t α_t ĝ_t`` (flattened) after the EMA step, and α per task."""
        stacked = ordered_losses(losses, self.task_names)
        size = sum(parameter.numel() for parameter in shared)
        device = shared[0].device
        gradients = torch.zeros(len(stacked), size, device=device)
        present = torch.tensor([bool(loss.detach() != 0) for loss in stacked], device=device)
        for index, loss in enumerate(stacked):
            if present[index] and loss.requires_grad:
                pieces = torch.autograd.grad(
                    scale(loss.log()), shared, retain_graph=True, allow_unused=True
                )
                gradients[index] = torch.cat(
                    [
                        torch.zeros(p.numel(), device=device) if g is None else g.flatten().float()
                        for g, p in zip(pieces, shared, strict=True)
                    ]
                )
        if not torch.isfinite(gradients).all():  # an fp16 overflow: let the scaler skip
            return gradients.sum(dim=0), torch.ones(len(stacked))
        average_across_processes([gradients])
        if self.gradient_ema is None or self.gradient_ema.shape != gradients.shape:
            self.gradient_ema = torch.zeros_like(gradients)
        self.steps += 1
        beta = self.beta / float(self.steps) ** self.beta_sigma
        mixed = beta * self.gradient_ema + (1 - beta) * gradients / loss_scale
        self.gradient_ema = torch.where(present[:, None], mixed, self.gradient_ema)
        norms = self.gradient_ema.norm(dim=1)
        usable = present & (norms > 0)
        if not usable.any():
            return torch.zeros(size, device=device), torch.zeros(len(stacked))
        scales = torch.where(usable, norms[usable].max() / norms, torch.zeros_like(norms))
        return loss_scale * (scales @ self.gradient_ema), scales.cpu()
