"""FAMO, Fast Adaptive Multitask Optimization (Liu et al., NeurIPS 2023, Algorithm 1, with the
Adam step on the logits of the authors' implementation).

Task weights z = softmax(ξ) over logits ξ (init 0). The network descends
``Σ_t z_t log L_t / c`` with ``c = Σ_t z_t / L_t`` held constant (eq. 7), i.e. the gradient
``Σ_t w_t ∇L_t`` with ``w_t = z_t / (c L_t)``, which :attr:`last_weights` reports; ``forward``
returns ``Σ_t w_t L_t`` with w constant, which has that gradient. Then the logits move towards
the tasks whose log loss fell least, along

    δ_t = log L_t(before) − log L_t(after),   d = J_z(ξ)ᵀ δ + γ ξ

with J_z the Jacobian of the softmax and γ = 0.001 (option ``gamma``, a weight decay on ξ).
Algorithm 1 writes the step as ``ξ ← ξ − β d``; the authors' code (github.com/Cranial-XIX/FAMO)
and LibMTL take an Adam step on d instead (``torch.optim.Adam([ξ], lr=β, weight_decay=γ)``:
β1 = 0.9, β2 = 0.999, ε = 1e-8), and β = 0.025 (option ``lr``) is that Adam's learning rate.
We take the same Adam step: with the plain step the logits move about 1/40 as far
(``tests/balancers/test_libmtl_reference.py``, docs/balancers.md "Compared with LibMTL").

The paper and LibMTL measure L(after) with a second forward pass of the same batch after the
optimiser step; the balancer contract has one forward pass per step, so L(after) is the next
step's loss (a new batch): no extra cost, a noisier δ. The lower bounds L_t* of the paper are 0.
The ξ update runs at the start of each training-mode ``forward`` that has a previous step; a
task with a zero loss (no labels in the batch) at either step gets δ_t = 0, and weight 0 in the
current step. Under ``torch.distributed`` δ is averaged over the processes, so every process
keeps the same ξ.
"""

from collections.abc import Sequence

import torch

from densetasks.balancers._common import average_across_processes, ordered_losses
from densetasks.balancers.base import Balancer
from densetasks.errors import ConfigError
from densetasks.tasks.base import Task

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
"""PyTorch's Adam defaults, which the authors' FAMO code and LibMTL use for the logits."""


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
        # Adam's state for the logits: first and second moment of d, number of steps taken.
        self.register_buffer("logit_moment", torch.zeros(count))
        self.register_buffer("logit_second_moment", torch.zeros(count))
        self.register_buffer("logit_steps", torch.zeros((), dtype=torch.long))

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
        """An Adam step on ξ along ``J_zᵀδ + γξ``, δ from the previous to the current losses;
        none when no task has a loss at both steps (the first step)."""
        delta = self.previous_losses.log() - current.log()
        known = torch.isfinite(delta).float()
        delta = torch.where(known.bool(), delta, torch.zeros_like(delta))
        self.previous_losses.copy_(current)
        average_across_processes([delta, known])
        if not known.any():
            return
        z = torch.softmax(self.logits, dim=0)
        direction = z * (delta - (z * delta).sum()) + self.gamma * self.logits
        first, second = ADAM_BETAS
        self.logit_steps += 1
        steps = int(self.logit_steps)
        self.logit_moment.mul_(first).add_((1 - first) * direction)
        self.logit_second_moment.mul_(second).add_((1 - second) * direction.square())
        moment = self.logit_moment / (1 - first**steps)
        second_moment = self.logit_second_moment / (1 - second**steps)
        self.logits -= self.lr * moment / (second_moment.sqrt() + ADAM_EPS)
