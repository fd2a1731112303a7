"""Dynamic Weight Average (Liu, Johns, Davison, "End-to-End Multi-Task Learning with
Attention", CVPR 2019, eq. 7).

    w_t(e) = T · exp(r_t(e−1) / τ) / Σ_k exp(r_k(e−1) / τ),   r_t(e−1) = L_t(e−1) / L_t(e−2)

with T tasks, temperature τ = 2 and w_t = 1 for the first two epochs. Our engine counts steps,
so an "epoch" here is a period of ``period`` steps and L_t(e) is the task's mean loss over the
steps of period e in which its loss was non-zero (a zero loss means "no label of this task in
the batch", which says nothing about the task's progress). Where a ratio cannot be formed (a
period without any supervised step of the task) r_t = 1, the value of a task whose loss stood
still. Under ``torch.distributed`` the period means are taken over all processes, so every
process uses the same weights.
"""

from collections.abc import Sequence

import torch
import torch.distributed as dist

from densetasks.balancers._common import ordered_losses
from densetasks.balancers.base import Balancer
from densetasks.errors import ConfigError
from densetasks.tasks.base import Task


class DWABalancer(Balancer):
    """Weights from the rate at which each task's loss fell over the last two periods."""

    def __init__(self, tasks: Sequence[Task], temperature: float = 2.0, period: int = 100) -> None:
        super().__init__(tasks)
        if temperature <= 0:
            raise ConfigError(f"balancer option 'temperature' must be > 0, got {temperature}")
        if period < 1:
            raise ConfigError(f"balancer option 'period' must be >= 1, got {period}")
        self.temperature = temperature
        self.period = period
        count = len(self.task_names)
        self.register_buffer("period_loss_sum", torch.zeros(count, dtype=torch.float32))
        self.register_buffer("period_supervised_steps", torch.zeros(count, dtype=torch.float32))
        self.register_buffer("steps_in_period", torch.zeros((), dtype=torch.long))
        # Mean loss of the last two completed periods: row 0 is e−1, row 1 is e−2; NaN = unknown.
        self.register_buffer(
            "previous_means", torch.full((2, count), float("nan"), dtype=torch.float32)
        )
        self.register_buffer("completed_periods", torch.zeros((), dtype=torch.long))

    def current_weights(self) -> torch.Tensor:
        """The weights of the running period (eq. 7; all 1 during the first two periods)."""
        count = len(self.task_names)
        if int(self.completed_periods) < 2:
            return torch.ones(count, dtype=torch.float32, device=self.previous_means.device)
        last, before_last = self.previous_means
        ratios = last / before_last
        ratios = torch.where(torch.isfinite(ratios), ratios, torch.ones_like(ratios))
        return (count * torch.softmax(ratios / self.temperature, dim=0)).float()

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(ordered_losses(losses, self.task_names))
        weights = self.current_weights()
        self.last_weights = dict(zip(self.task_names, weights.tolist(), strict=True))
        if self.training:
            self._record(stacked.detach())
        return (weights.to(stacked.device) * stacked).sum()

    def _record(self, losses: torch.Tensor) -> None:
        """Add one step's losses to the running period; close the period when it is full."""
        losses = losses.to(self.period_loss_sum)
        supervised = losses != 0
        self.period_loss_sum += torch.where(supervised, losses, torch.zeros_like(losses))
        self.period_supervised_steps += supervised.to(losses.dtype)
        self.steps_in_period += 1
        if int(self.steps_in_period) == self.period:
            self._close_period()

    def _close_period(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.period_loss_sum)
            dist.all_reduce(self.period_supervised_steps)
        means = self.period_loss_sum / self.period_supervised_steps  # NaN where never supervised
        self.previous_means[1] = self.previous_means[0]
        self.previous_means[0] = means
        self.completed_periods += 1
        self.period_loss_sum.zero_()
        self.period_supervised_steps.zero_()
        self.steps_in_period.zero_()
