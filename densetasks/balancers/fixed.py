"""Fixed loss weights: ``total = Σ_t w_t · L_t``; ``equal`` is the reference with every w_t = 1.

The hand-tuned weightings of the papers are fixed balancers, e.g. DenseMTL's grid-searched
S-D-N-E weights {100, 1, 100, 50} (Lopes et al., WACV 2023) or fission's normals ×10
(Hickson et al., Network Fission, suppl.).
"""

from collections.abc import Mapping, Sequence

import torch

from densetasks.balancers._common import ordered_losses, per_task_values
from densetasks.balancers.base import Balancer
from densetasks.tasks.base import Task


class FixedBalancer(Balancer):
    """Constant weights per task; a task the ``weights`` option leaves out gets 1."""

    def __init__(self, tasks: Sequence[Task], weights: Mapping[str, float] | None = None) -> None:
        super().__init__(tasks)
        values = per_task_values("weights", weights, self.task_names, default=1.0)
        self.register_buffer("task_weights", torch.tensor(values, dtype=torch.float32))

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(ordered_losses(losses, self.task_names))
        weights = self.task_weights.to(stacked.device)
        self.last_weights = dict(zip(self.task_names, weights.tolist(), strict=True))
        return (weights * stacked).sum()


def equal_balancer(tasks: Sequence[Task]) -> FixedBalancer:
    """The unweighted sum of the task losses ("uniform" in Kendall et al., CVPR 2018, Table 1)."""
    return FixedBalancer(tasks)
