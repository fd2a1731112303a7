"""FAMO, Fast Adaptive Multitask Optimization (Liu et al., NeurIPS 2023, Algorithm 1).

Task weights z = softmax(ξ) over logits ξ (init 0). The network descends
``Σ_t z_t log L_t / c`` with ``c = Σ_t z_t / L_t`` held constant (eq. 7), i.e. the gradient
``Σ_t w_t ∇L_t`` with ``w_t = z_t / (c L_t)``, which :attr:`last_weights` reports; ``forward``
returns ``Σ_t w_t L_t`` with w constant, which has that gradient. Then the logits move towards
the tasks whose log loss fell least (Algorithm 1, the ξ update):

    δ_t = log L_t(before) − log L_t(after),   ξ ← ξ − β (J_z(ξ)ᵀ δ + γ ξ)

with J_z the Jacobian of the softmax, β = 0.025 (option ``lr``) and γ = 0.001 (option
``gamma``, a weight decay on ξ), the paper's defaults. The paper measures L(after) with a second
forward pass of the same batch after the optimiser step; the balancer contract has one forward
pass per step, so L(after) is the next step's loss (a new batch), as LibMTL does: no extra cost,
a noisier δ. The lower bounds L_t* of the paper are 0. The ξ update runs at the start of each
training-mode ``forward``; a task with a zero loss (no labels in the batch) at either step gets
δ_t = 0, and weight 0 in the current step. Under ``torch.distributed`` δ is averaged over the
processes, so every process keeps the same ξ.
"""

from collections.abc import Sequence

import torch

from densetasks.balancers._common import average_across_processes, ordered_losses
from densetasks.balancers.base import Balancer
from densetasks.errors import ConfigError
from densetasks.tasks.base import Task


class FAMOBalancer(Balancer):
    """Softmax weights whose logits follow the per-task rate of log-loss decrease."""

    def __init__(self, tasks: Sequence[Task], lr: float = 0.025, gamma: float = 0.001) -> None:
        super().__init__(tasks)
        if lr <= 0:
            raise ConfigError(f"balancer option 'lr' must be > 0, got {lr}")
        if gamma < 0:
            raise ConfigError(f"balancer option 'gamma' must be >= 0, got {gamma}")
        self.lr = lr
        self.gamma = gamma
        count = len(self.task_names)
        self.register_buffer("logits", torch.zeros(count))
        # The last training step's losses; NaN where unknown or zero (no labels).
        self.register_buffer("previous_losses", torch.full((count,), float("nan")))

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(ordered_losses(losses, self.task_names))
        current = stacked.detach().to(self.logits)
        present = current != 0
        if self.training:
            self._update_logits(torch.where(present, current, torch.full_like(current, torch.nan)))
        z = torch.softmax(self.logits, dim=0)
        inverse = torch.where(present, z / current, torch.zeros_like(z))
        weights = inverse / inverse.sum() if present.any() else inverse
        self.last_weights = dict(zip(self.task_names, weights.tolist(), strict=True))
        return (weights.to(stacked.device) * stacked).sum()

    def _update_logits(self, current: torch.Tensor) -> None:
        """ξ ← ξ − β (J_zᵀ δ + γ ξ) with δ from the previous to the current losses."""
        delta = self.previous_losses.log() - current.log()
        delta = torch.where(torch.isfinite(delta), delta, torch.zeros_like(delta))
        average_across_processes([delta])
        z = torch.softmax(self.logits, dim=0)
        softmax_vjp = z * (delta - (z * delta).sum())
        self.logits -= self.lr * (softmax_vjp + self.gamma * self.logits)
        self.previous_losses.copy_(current)
