"""Homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

Each task has a learnable observation noise σ_t. Eq. 10 of the paper weighs a regression loss by
``1/(2σ²)`` and a classification loss by ``1/σ²`` (the latter through the approximation of
§3.2, eq. 9), each plus ``log σ``. As the paper recommends, we learn ``s_t = log σ_t²`` for
numerical stability, so the total is

* regression:      ``0.5 · exp(−s_t) · L_t + 0.5 · s_t``
* classification:  ``exp(−s_t) · L_t + 0.5 · s_t``

For a regression task the optimum over s is ``exp(s) = L`` (with L a mean squared error, the
noise variance). The weights are robust to the initial s over [−2, 5] (App. B of the paper).
"""

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from densetasks.balancers._common import ordered_losses, per_task_values
from densetasks.balancers.base import Balancer
from densetasks.tasks.base import Likelihood, Task

_LOSS_FACTOR = {Likelihood.REGRESSION: 0.5, Likelihood.CLASSIFICATION: 1.0}
"""The factor in front of ``exp(−s)·L`` per likelihood (Kendall et al., CVPR 2018, eq. 10)."""


class UncertaintyBalancer(Balancer):
    """Learns one log-variance ``s_t = log σ_t²`` per task (an ``nn.Parameter``).

    ``init`` is the starting s of every task, ``task_init`` overrides it per task.
    :attr:`last_weights` holds the effective multipliers of the losses, ``c_t · exp(−s_t)``
    with c_t = 0.5 for regression and 1 for classification; :meth:`sigmas` gives σ_t.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        init: float = 0.0,
        task_init: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(tasks)
        initial = per_task_values("task_init", task_init, self.task_names, default=init)
        self.log_variances = nn.Parameter(torch.tensor(initial, dtype=torch.float32))
        factors = [_LOSS_FACTOR[Likelihood(self.likelihoods[name])] for name in self.task_names]
        self.register_buffer("loss_factors", torch.tensor(factors, dtype=torch.float32))

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(ordered_losses(losses, self.task_names))
        precision = self.loss_factors * torch.exp(-self.log_variances)
        self.last_weights = dict(zip(self.task_names, precision.detach().tolist(), strict=True))
        return (precision * stacked + 0.5 * self.log_variances).sum()

    def sigmas(self) -> dict[str, float]:
        """The learned observation noise σ_t = exp(s_t / 2) per task."""
        return dict(
            zip(self.task_names, torch.exp(0.5 * self.log_variances.detach()).tolist(), strict=True)
        )
