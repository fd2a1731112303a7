"""IMTL-L, the loss-balancing half of Impartial Multi-Task Learning (Liu et al., "Towards
Impartial Multi-task Learning", ICLR 2021, §3.2, eq. 3).

    total = Σ_t (e^{s_t} · L_t − s_t),   s_t learnable (init 0)

Minimising over s_t gives e^{s_t} = 1 / L_t, so every scaled loss e^{s_t} L_t tends to 1: the
tasks are balanced in loss scale whatever their units. The paper's loss-gradient variant
(IMTL-G) is the ``imtl_g`` aggregator; the paper's IMTL combines both. :attr:`last_weights`
reports e^{s_t}. A task with a zero loss (no labels in the batch) is left out of the step:
its term would be ``−s_t`` and push s_t up without bound.
"""

from collections.abc import Sequence

import torch
from torch import nn

from densetasks.balancers._common import ordered_losses
from densetasks.balancers.base import Balancer
from densetasks.tasks.base import Task


class IMTLLBalancer(Balancer):
    """Learned log-scales s_t with ``Σ_t e^{s_t} L_t − s_t``."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__(tasks)
        self.log_scales = nn.Parameter(torch.zeros(len(self.task_names)))

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(ordered_losses(losses, self.task_names))
        scales = self.log_scales.to(stacked.device)
        terms = scales.exp() * stacked - scales
        present = stacked.detach() != 0
        weights = scales.detach().exp()
        self.last_weights = dict(zip(self.task_names, weights.tolist(), strict=True))
        return torch.where(present, terms, stacked).sum()
