"""The balancer contract: how per-task losses become one scalar and one backward pass.

A balancer is an ``nn.Module`` so that learnable state (e.g. the log-variances of Kendall et
al., CVPR 2018) is optimised and checkpointed with the model: the engine adds
``balancer.parameters()`` to the optimiser and ``balancer.state_dict()`` to checkpoints.
"""

from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import nn

from densetasks.tasks.base import Task


class Balancer(nn.Module, metaclass=ABCMeta):
    """Combines ``{task: loss}`` into one scalar; reports the effective weights."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__()
        self.task_names = [task.name for task in tasks]
        self.likelihoods = {task.name: task.likelihood for task in tasks}
        self.last_weights: dict[str, float] = {}

    needs_last_shared_layer: bool = False
    """Whether the balancer measures task gradients on the network's last shared layer: the
    engine then hands it ``Architecture.last_shared_layer()`` through
    :meth:`use_last_shared_layer` before the first step (GradNorm's W). The engine asks this
    question of every balancer and names none."""

    def use_last_shared_layer(self, layer: Sequence[nn.Parameter]) -> None:
        """Receive the last shared layer (called only when :attr:`needs_last_shared_layer`)."""
        raise TypeError(f"{type(self).__name__} does not measure gradients on a shared layer")

    @abstractmethod
    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """The total loss; sets :attr:`last_weights` (effective weight per task)."""

    def backward(
        self,
        losses: dict[str, torch.Tensor],
        shared_parameters: Sequence[nn.Parameter],
        scale: Callable[[torch.Tensor], torch.Tensor] = lambda total: total,
    ) -> torch.Tensor:
        """Fill ``.grad`` of every parameter; returns the (detached) total loss.

        The default backpropagates ``scale(forward(losses))`` (``scale`` is the AMP grad
        scaler's). Gradient-aggregation balancers override this and use
        ``shared_parameters``.
        """
        total = self(losses)
        scale(total).backward()
        return total.detach()

    def weights(self) -> dict[str, float]:
        """Effective weight per task at the last step, for logs and plots."""
        return dict(self.last_weights)
