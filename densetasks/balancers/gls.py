"""Geometric Loss Strategy (Chennupati et al., "MultiNet++: Multi-Stream Feature Aggregation
and Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019, eq. 2).

    total = (Π_t L_t)^{1/T} = exp(mean_t log L_t)

The geometric mean is invariant to a rescaling of any one loss, so tasks with losses of
different magnitudes need no hand-tuned weights; its gradient weighs task t by
``∂total/∂L_t = total / (T · L_t)``, which :attr:`last_weights` reports. A task with a zero
loss (no labels in the batch) would make the product 0 and stop every update: the mean is taken
over the tasks with a non-zero loss that step, and the others get weight 0.
"""

import torch

from densetasks.balancers._common import ordered_losses
from densetasks.balancers.base import Balancer


class GLSBalancer(Balancer):
    """The geometric mean of the (non-zero) task losses."""

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(ordered_losses(losses, self.task_names))
        present = stacked.detach() != 0
        if not present.any():
            self.last_weights = {name: 0.0 for name in self.task_names}
            return stacked.sum()
        total = stacked[present].log().mean().exp()
        weights = torch.where(
            present, total.detach() / (present.sum() * stacked.detach()), torch.zeros_like(stacked)
        )
        self.last_weights = dict(zip(self.task_names, weights.tolist(), strict=True))
        return total
