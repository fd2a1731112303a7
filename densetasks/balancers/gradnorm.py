"""GradNorm (Chen, Badrinarayanan, Lee, Rabinovich, ICML 2018): learn weights w_t so that the
gradient norms of the weighted task losses on the shared layer train at matching rates.

At each step (paper eqs. 1–2, Algorithm 1):

* ``G_t = ‖∇_W (w_t · L_t)‖₂`` on the shared parameters W, ``Ḡ = mean_t G_t``;
* ``L̃_t = L_t / L_t(0)`` (loss ratio to the task's first loss), ``r_t = L̃_t / mean_k L̃_k``;
* ``L_grad = Σ_t |G_t − Ḡ · r_t^α|`` with the target ``Ḡ · r_t^α`` held constant;
* the network gets the gradient of ``Σ_t w_t · L_t`` (w held constant), w gets ``∇_w L_grad``;
* after the optimiser step the weights are renormalised to ``Σ_t w_t = T``.

Everything happens inside :meth:`GradNormBalancer.backward`, so the engine needs no special
case: ``backward`` sets ``w.grad`` and the optimiser (which holds ``balancer.parameters()``)
updates w; the renormalisation happens at the start of the next ``forward``.

W is the weight of the last shared layer, as in the paper (cheap: one gradient per task on one
layer): the balancer declares it (``needs_last_shared_layer``) and the engine hands it
``Architecture.last_shared_layer()`` through :meth:`GradNormBalancer.use_last_shared_layer`
(``engine.build.build_balancer``); a balancer never given a layer takes the last tensor of
``shared_parameters`` (what a caller outside the engine passes).
``gradient_layer="all"`` uses every shared parameter instead.
A task whose loss is zero in a batch (no labels) or that has no first loss yet takes no part in
``L_grad`` for that step: its weight gets no gradient.
"""

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

from densetasks.balancers._common import ordered_losses
from densetasks.balancers.base import Balancer
from densetasks.errors import ConfigError
from densetasks.tasks.base import Task

GradientLayer = Literal["last", "all"]


class GradNormBalancer(Balancer):
    """Learnable task weights (init 1) trained by the GradNorm loss with asymmetry ``alpha``."""

    def __init__(
        self, tasks: Sequence[Task], alpha: float = 1.5, gradient_layer: GradientLayer = "last"
    ) -> None:
        super().__init__(tasks)
        if gradient_layer not in ("last", "all"):
            raise ConfigError(
                f"balancer option 'gradient_layer' must be 'last' or 'all', got {gradient_layer!r}"
            )
        self.alpha = alpha
        self.gradient_layer = gradient_layer
        count = len(self.task_names)
        self.task_weights = nn.Parameter(torch.ones(count))
        # L_t(0), the first non-zero loss of each task; 0 until it has been seen.
        self.register_buffer("initial_losses", torch.zeros(count))
        # W for gradient_layer="last": the model's parameters, not this module's (not saved).
        self.layer: list[nn.Parameter] = []

    @property
    def needs_last_shared_layer(self) -> bool:
        """W is the last shared layer unless ``gradient_layer="all"``."""
        return self.gradient_layer == "last"

    def use_last_shared_layer(self, layer: Sequence[nn.Parameter]) -> None:
        """Measure the task gradients on ``layer`` (``Architecture.last_shared_layer()``)."""
        if not layer:
            raise ValueError("GradNorm's layer needs at least one parameter")
        self.layer = list(layer)

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """``Σ_t w_t · L_t`` with w renormalised to sum to T and held constant here."""
        stacked = torch.stack(ordered_losses(losses, self.task_names))
        with torch.no_grad():
            self.task_weights.mul_(len(self.task_names) / self.task_weights.sum())
            if self.training:
                current = stacked.detach().to(self.initial_losses)
                first_seen = (self.initial_losses == 0) & (current > 0)
                self.initial_losses[first_seen] = current[first_seen]
        weights = self.task_weights.detach()
        self.last_weights = dict(zip(self.task_names, weights.tolist(), strict=True))
        return (weights.to(stacked.device) * stacked).sum()

    def backward(
        self,
        losses: dict[str, torch.Tensor],
        shared_parameters: Sequence[nn.Parameter],
        scale: Callable[[torch.Tensor], torch.Tensor] = lambda total: total,
    ) -> torch.Tensor:
        """Network grads of ``scale(Σ w_t L_t)``; ``w.grad`` from the GradNorm loss.

        ``scale`` is applied to each task loss before taking gradient norms, so ``w.grad`` is
        scaled like every other gradient and the AMP scaler's ``unscale_`` treats it alike.
        """
        total = self(losses)
        stacked = ordered_losses(losses, self.task_names)
        layer = self._gradient_parameters(shared_parameters)
        norms = torch.stack([self._gradient_norm(scale(loss), layer) for loss in stacked])
        current = torch.stack([loss.detach() for loss in stacked]).to(self.initial_losses)
        active = (current > 0) & (self.initial_losses > 0) & (norms > 0)
        if active.any():
            gradient = self._weight_gradient(
                norms[active], current[active] / self.initial_losses[active], active
            )
            if self.task_weights.grad is None:
                self.task_weights.grad = gradient
            else:
                self.task_weights.grad += gradient
        if total.requires_grad:
            scale(total).backward()
        return total.detach()

    def _gradient_parameters(self, shared_parameters: Sequence[nn.Parameter]) -> list[nn.Parameter]:
        """W: every shared parameter for ``"all"``, else the given layer or the last tensor."""
        trainable = [parameter for parameter in shared_parameters if parameter.requires_grad]
        if self.gradient_layer == "last":
            own = [parameter for parameter in self.layer if parameter.requires_grad]
            trainable = own if self.layer else trainable[-1:]
        if not trainable:
            raise ValueError("GradNorm needs a shared layer with parameters that require grad")
        return trainable

    @staticmethod
    def _gradient_norm(loss: torch.Tensor, parameters: list[nn.Parameter]) -> torch.Tensor:
        """‖∇_W L‖₂ (detached; 0 if L does not depend on W)."""
        zero = torch.zeros((), device=parameters[0].device)
        if not loss.requires_grad:
            return zero
        gradients = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
        squares = [gradient.pow(2).sum() for gradient in gradients if gradient is not None]
        return torch.stack(squares).sum().sqrt().detach() if squares else zero

    def _weight_gradient(
        self, norms: torch.Tensor, loss_ratios: torch.Tensor, active: torch.Tensor
    ) -> torch.Tensor:
        """∇_w Σ_t |w_t·‖∇_W L_t‖ − Ḡ·r_t^α| over the active tasks (eq. 2, target constant)."""
        weights = self.task_weights.detach()[active].clone().requires_grad_(True)
        with torch.enable_grad():
            weighted_norms = weights * norms.to(weights)
            average_norm = weighted_norms.mean().detach()
            relative_rates = loss_ratios / loss_ratios.mean()
            target = (average_norm * relative_rates.pow(self.alpha)).detach()
            gradnorm_loss = (weighted_norms - target).abs().sum()
            (active_gradient,) = torch.autograd.grad(gradnorm_loss, weights)
        gradient = torch.zeros_like(self.task_weights)
        gradient[active] = active_gradient
        return gradient
