"""Smooth Tchebycheff scalarisation (Lin et al., "Smooth Tchebycheff Scalarization for
Multi-Objective Optimization", ICML 2024, eq. 9), in the form of the authors' LibMTL version.

    total = T · μ · log Σ_t exp(f_t / μ),   f_t = log(L_t / n_t)

a smooth maximum (μ → 0: the Tchebycheff max) of the log losses relative to a reference point
n; the task that lags most, relative to its reference, gets the largest weight. The paper's
ideal point z needs the per-task optimum, which training does not know; as in LibMTL, n is the
"nadir" vector of the run's own losses: each task's mean loss over the last ``nadir_steps``
(100) steps of a warm-up of ``warmup_steps`` (400) steps, during which the total is the plain
``Σ_t log L_t``. μ = 1 (option ``mu``). :attr:`last_weights` reports ``∂total/∂L_t``.

A task with a zero loss (no labels in the batch) is left out of the step and of the nadir mean;
a task never supervised in the nadir window keeps n_t = 1 (its plain log loss). Only
training-mode calls count steps and record losses. Under ``torch.distributed`` the nadir sums
are averaged over processes, so every process uses the same n.
"""

from collections.abc import Sequence

import torch

from densetasks.balancers._common import average_across_processes, ordered_losses
from densetasks.balancers.base import Balancer
from densetasks.errors import ConfigError
from densetasks.tasks.base import Task


class STCHBalancer(Balancer):
    """Smooth maximum of the log losses relative to a nadir point from a warm-up."""

    def __init__(
        self,
        tasks: Sequence[Task],
        mu: float = 1.0,
        warmup_steps: int = 400,
        nadir_steps: int = 100,
    ) -> None:
        super().__init__(tasks)
        if mu <= 0:
            raise ConfigError(f"balancer option 'mu' must be > 0, got {mu}")
        if not 1 <= nadir_steps <= warmup_steps:
            raise ConfigError(
                f"balancer options need 1 <= 'nadir_steps' <= 'warmup_steps', got {nadir_steps}"
                f" and {warmup_steps}"
            )
        self.mu = mu
        self.warmup_steps = warmup_steps
        self.nadir_steps = nadir_steps
        count = len(self.task_names)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("nadir_sum", torch.zeros(count))
        self.register_buffer("nadir_count", torch.zeros(count))
        self.register_buffer("nadir", torch.full((count,), float("nan")))

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(ordered_losses(losses, self.task_names))
        present = stacked.detach() != 0
        safe = torch.where(present, stacked, torch.ones_like(stacked))
        warming_up = int(self.steps) < self.warmup_steps
        if self.training and warming_up:
            self._record(stacked.detach(), present)
        if warming_up:
            logs = torch.where(present, safe.log(), torch.zeros_like(safe))
            weights = torch.where(present, 1 / safe.detach(), torch.zeros_like(safe))
            self.last_weights = dict(zip(self.task_names, weights.tolist(), strict=True))
            return logs.sum()
        reference = torch.nan_to_num(self.nadir, nan=1.0).to(stacked.device)
        scaled = (safe / reference).log() / self.mu
        scaled = torch.where(present, scaled, torch.full_like(scaled, -torch.inf))
        if not present.any():
            self.last_weights = {name: 0.0 for name in self.task_names}
            return stacked.sum()
        count = len(self.task_names)
        total = count * self.mu * torch.logsumexp(scaled, dim=0)
        weights = count * torch.softmax(scaled.detach(), dim=0) / safe.detach()
        self.last_weights = dict(zip(self.task_names, weights.tolist(), strict=True))
        return total

    def _record(self, losses: torch.Tensor, present: torch.Tensor) -> None:
        """Count a warm-up step; sum the losses of its last ``nadir_steps`` steps into n."""
        self.steps += 1
        if int(self.steps) <= self.warmup_steps - self.nadir_steps:
            return
        losses, present = losses.to(self.nadir_sum), present.to(self.nadir_sum.device)
        self.nadir_sum += torch.where(present, losses, torch.zeros_like(losses))
        self.nadir_count += present.to(losses.dtype)
        if int(self.steps) == self.warmup_steps:
            average_across_processes([self.nadir_sum, self.nadir_count])
            self.nadir.copy_(self.nadir_sum / self.nadir_count)  # NaN: never supervised
