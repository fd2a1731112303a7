"""Jacobian-descent balancers: the task gradients on the shared parameters are combined by a
TorchJD aggregator (Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024)
instead of being summed.

On the shared parameters θ the balancer builds the Jacobian ``J = [∇_θ L_1; …; ∇_θ L_T]`` and
stores ``A(J) = wᵀ J`` in their ``.grad``, where the aggregator A chooses the row weights w:

* ``upgrad``  — each row projected onto the dual cone of the rows, then averaged (Quinton & Rey);
* ``mgda``    — the minimum-norm point of the convex hull of the rows (Désidéri 2012;
  Sener & Koltun 2018);
* ``pcgrad``  — each row projected off the rows it conflicts with, then summed (Yu et al. 2020);
* ``cagrad``  — conflict-averse: the mean gradient moved within a ball of radius c·‖mean‖ to
  raise the worst task (Liu et al. 2021; option ``c``, default 0.4); needs cvxpy + clarabel;
* ``nashmtl`` — the Nash bargaining solution (Navon et al. 2022); needs cvxpy + ecos;
* ``aligned_mtl`` — the rows made orthogonal and equal in norm via the Gramian's eigenvalues,
  then weighed by a preference vector (Senushkin et al., CVPR 2023, Algorithm 1);
* ``config``  — the conflict-free direction of equal cosine to every row, via the
  pseudo-inverse of the normalised rows (Liu et al., ICLR 2025, eq. 2);
* ``dualproj`` — the mean projected onto the dual cone of the rows (Lopez-Paz & Ranzato,
  NeurIPS 2017, eq. 11);
* ``excess_mtl`` — weights by exponentiated gradient on estimated excess risks (He et al.,
  ICML 2024, eq. 9; default ``n_warmup_steps`` 1, see :data:`_DEFAULT_OPTIONS`);
* ``fairgrad`` — α-fair resource allocation of the update (Ban & Ji, ICML 2024, Algorithm 1;
  option ``alpha``, default 1.0, proportional fairness); needs scipy;
* ``graddrop`` — per coordinate, only the rows of one sign survive, drawn with the sign purity
  as probability (Chen et al., NeurIPS 2020, Algorithm 1 lines 10–15);
* ``gradvac`` — rows pushed towards an EMA target of their pairwise cosines (Wang et al.,
  ICLR 2021; option ``beta``, default 0.5);
* ``imtl_g`` — the combination with equal projections onto every row (Liu et al., ICLR 2021,
  generalised by Quinton & Rey 2024);
* ``mean``, ``sum`` — the rows averaged / summed (the linear-scalarisation baselines);
* ``pcd``    — priority-constrained descent: follow the first task, each other task guaranteed
  a fraction τ of its own progress (TMLR 2026; option ``tau``, default 0.02);
* ``random`` — RLW, weights a softmax of standard normal draws at every step (Lin et al.,
  TMLR 2022, Algorithm 2).

Options that TorchJD takes as tensors (``pref_vector`` of UPGrad, DualProj, Aligned-MTL and
ConFIG, ``leak`` of GradDrop, a per-task ``tau`` of PCD) are found from the aggregator's
signature (a parameter annotated ``Tensor``) and given in the config as a list with one number
per task, in the order of ``tasks``: ``balancer.options.pref_vector: [0.5, 0.3, 0.2]``. PCD's
``tau`` has one number per secondary task (all but the first). When a task is left out of a
step (below), its entry is left out of these vectors for that step.

``graddrop`` and ``config`` do not weigh the rows; for them :attr:`last_weights` holds the
least-squares weights w with ``wᵀJ`` closest to ``A(J)``.

Task-specific parameters receive their ordinary gradients (each head only feeds one loss, so
the sum of losses gives exactly them). :attr:`last_weights` holds w, the weight the aggregator
gave to each task's gradient; ``forward`` alone returns the plain sum of the losses.

A task whose Jacobian row is all zero at a step (its loss is 0 because the batch has none of
its labels) is left out of the aggregation for that step (weight 0): MGDA would otherwise pick
the zero row as the minimum-norm point and stop every shared update.

Under ``torch.distributed`` each process aggregates the Jacobian of its own batch, then the
aggregated gradients are averaged over processes. That is the mean of per-process
aggregations, not the aggregation of the global (mean) Jacobian: the two agree for linear
aggregators (mean, fixed weights) and differ for the others, as the per-process Jacobians are
noisier. Aggregating the global Jacobian would need an all-reduce of the full T×|θ| Jacobian.
"""

import importlib
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from densetasks.balancers._common import (
    average_across_processes,
    backward_with_shared_update,
    ordered_losses,
    trainable_shared,
)
from densetasks.balancers.base import Balancer
from densetasks.errors import ConfigError
from densetasks.tasks.base import Task

if TYPE_CHECKING:
    from torchjd.aggregation import Aggregator

AGGREGATORS: dict[str, str] = {
    "upgrad": "UPGrad",
    "mgda": "MGDA",
    "pcgrad": "PCGrad",
    "cagrad": "CAGrad",
    "nashmtl": "NashMTL",
    "aligned_mtl": "AlignedMTL",
    "config": "ConFIG",
    "dualproj": "DualProj",
    "excess_mtl": "ExcessMTL",
    "fairgrad": "FairGrad",
    "graddrop": "GradDrop",
    "gradvac": "GradVac",
    "imtl_g": "IMTLG",
    "mean": "Mean",
    "pcd": "PCD",
    "random": "Random",
    "sum": "Sum",
}
"""Balancer name -> class in ``torchjd.aggregation``, imported on first use: importing
torchjd's aggregators pulls cvxpy where it is installed, which takes seconds."""

_DEFAULT_OPTIONS: dict[str, dict[str, float]] = {
    "cagrad": {"c": 0.4},
    "fairgrad": {"alpha": 1.0},
    "excess_mtl": {"n_warmup_steps": 1},
}
"""Defaults that differ from TorchJD's. ExcessMTL: with TorchJD's ``n_warmup_steps=0`` the first
step moves the weights by the unscaled excess risks (one task takes ~all the weight at once);
one warm-up step makes the first step only record the scale, as the authors' code and LibMTL
do (``tests/balancers/test_libmtl_reference.py``)."""
_TASK_COUNT_OPTION = {"nashmtl": "n_tasks"}
"""Aggregators that must be told the number of tasks, and the keyword for it."""
_FIRST_TASK_OF_VECTOR = {("pcd", "tau"): 1}
"""Tensor options whose entries start at a later task than the first (PCD's τ: one entry per
secondary objective, TorchJD's ``PCD`` docstring); every other one has an entry per task."""


def tensor_options(aggregator_class: type) -> list[str]:
    """The constructor parameters of ``aggregator_class`` annotated as accepting a Tensor."""
    parameters = inspect.signature(aggregator_class, eval_str=True).parameters
    return [
        name
        for name, parameter in parameters.items()
        if parameter.annotation is torch.Tensor
        or (
            typing.get_origin(parameter.annotation) in (typing.Union, types.UnionType)
            and torch.Tensor in typing.get_args(parameter.annotation)
        )
    ]


def _first_task(name: str, option: str) -> int:
    """The index of the task that entry 0 of vector option ``option`` of ``name`` belongs to."""
    return _FIRST_TASK_OF_VECTOR.get((name, option), 0)


def _as_tensor(name: str, option: str, value: Any, task_count: int) -> Any:
    """A config list for a Tensor option as a float32 vector of the expected length; any other
    value (a float for PCD's ``tau``) unchanged. A wrong shape or length is a ConfigError."""
    if not isinstance(value, list | tuple | torch.Tensor):
        return value
    expected = task_count - _first_task(name, option)
    try:
        vector = torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"balancer.options.{option} of {name!r} must be a list of numbers: {error}"
        ) from None
    if vector.dim() != 1 or len(vector) != expected:
        which = "secondary task (all but the first)" if expected != task_count else "task"
        raise ConfigError(
            f"balancer.options.{option} of {name!r} needs one number per {which}: "
            f"{expected} for {task_count} tasks, got {list(value)}"
        )
    return vector


def build_aggregator(name: str, task_count: int, **options: Any) -> "Aggregator":
    """The TorchJD aggregator ``name`` (a key of :data:`AGGREGATORS`) with its options.

    A list given for a Tensor option (see :func:`tensor_options`) becomes a float32 vector.
    """
    if name not in AGGREGATORS:
        raise ConfigError(f"unknown aggregator {name!r}; known: {', '.join(sorted(AGGREGATORS))}")
    aggregator_class = getattr(importlib.import_module("torchjd.aggregation"), AGGREGATORS[name])
    vectors = set(tensor_options(aggregator_class))
    options = {
        option: _as_tensor(name, option, value, task_count) if option in vectors else value
        for option, value in options.items()
    }
    arguments = {**_DEFAULT_OPTIONS.get(name, {}), **options}
    if name in _TASK_COUNT_OPTION:
        arguments[_TASK_COUNT_OPTION[name]] = task_count
    try:
        inspect.signature(aggregator_class).bind(**arguments)
    except TypeError as error:
        raise ConfigError(f"bad options {sorted(options)} for balancer {name!r}: {error}") from None
    try:
        return aggregator_class(**arguments)
    except ImportError as error:
        raise ConfigError(f"balancer {name!r} needs optional packages: {error}") from None
    except ValueError as error:
        raise ConfigError(f"bad options {sorted(options)} for balancer {name!r}: {error}") from None


class JacobianAggregationBalancer(Balancer):
    """Aggregates the per-task gradients of the shared parameters with a TorchJD aggregator.

    ``parallel_chunk_size`` is passed to :func:`torchjd.autojac.jac` (``None``: all tasks at
    once through ``torch.vmap``; 1: one task at a time, for models vmap cannot handle).
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        aggregator: "Aggregator",
        parallel_chunk_size: int | None = None,
    ) -> None:
        super().__init__(tasks)
        self.aggregator = aggregator
        self.parallel_chunk_size = parallel_chunk_size
        self._task_vectors = {
            option: value
            for option in tensor_options(type(aggregator))
            if isinstance(value := getattr(aggregator, option, None), torch.Tensor)
        }
        """The aggregator's per-task vector options as configured, e.g. ``pref_vector``."""

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """The unweighted sum of the losses (the total to log; the aggregation is in backward)."""
        stacked = torch.stack(ordered_losses(losses, self.task_names))
        self.last_weights = {name: 1.0 for name in self.task_names}
        return stacked.sum()

    def backward(
        self,
        losses: dict[str, torch.Tensor],
        shared_parameters: Sequence[nn.Parameter],
        scale: Callable[[torch.Tensor], torch.Tensor] = lambda total: total,
    ) -> torch.Tensor:
        """Task-specific grads from ``scale(Σ L_t)``; shared grads ``+= s · A(J)``.

        ``scale`` multiplies by the AMP loss scale s (the grad scaler's ``scale``). J is taken
        of the scaled losses (fp16 gradients stay in range) and divided by s before the
        aggregator weighs its rows: Nash-MTL is not positively homogeneous, so weighing
        ``s · J`` would shrink its update by s once the scaler unscales it.

        The plain backward of the sum also runs DDP's hooks, so the reducer finishes its round
        and task-specific gradients are averaged over processes as usual; the shared gradients
        it leaves are then replaced by the (process-averaged) aggregation.
        """
        total = self(losses)
        shared = trainable_shared(shared_parameters, "Jacobian aggregation")
        scaled = [scale(loss) for loss in ordered_losses(losses, self.task_names)]
        loss_scale = float(scale(torch.ones((), device=total.device)))
        aggregated, weights = self._aggregate(scaled, shared, loss_scale)
        average_across_processes(aggregated)
        backward_with_shared_update(total, shared, scale, aggregated)
        self.last_weights = dict(zip(self.task_names, weights.tolist(), strict=True))
        return total.detach()

    def _aggregate(
        self, scaled_losses: list[torch.Tensor], shared: list[nn.Parameter], loss_scale: float
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per shared parameter its slice of ``w(J)ᵀ (s·J)``, and w per task (0 for the left-out
        ones), where ``s·J`` is the Jacobian of the scaled losses and ``s = loss_scale``."""
        weights = torch.zeros(len(scaled_losses))
        differentiable = [index for index, loss in enumerate(scaled_losses) if loss.requires_grad]
        if not differentiable:
            return [torch.zeros_like(parameter) for parameter in shared], weights
        from torchjd.autojac import jac  # deferred like the aggregators, see AGGREGATORS

        jacobians = jac(
            [scaled_losses[index] for index in differentiable],
            shared,
            retain_graph=True,
            parallel_chunk_size=self.parallel_chunk_size,
        )
        matrix = torch.cat([jacobian.flatten(1) for jacobian in jacobians], dim=1).float()
        informative = matrix.norm(dim=1) != 0  # an overflowed (inf / NaN) row is kept
        if not informative.any():
            return [torch.zeros_like(parameter) for parameter in shared], weights
        rows = matrix[informative]
        kept = torch.tensor(differentiable)[informative.cpu()]
        self._select_vector_entries(kept.tolist(), rows.device)
        gradient, row_weights = self._combine(rows, loss_scale)
        weights[kept] = row_weights.detach().cpu().float()
        pieces = gradient.split([parameter.numel() for parameter in shared])
        return [
            piece.view_as(parameter).to(parameter.dtype)
            for piece, parameter in zip(pieces, shared, strict=True)
        ], weights

    def _select_vector_entries(self, kept: list[int], device: torch.device) -> None:
        """Give the aggregator the entries of its vector options that belong to the ``kept``
        tasks (this step's rows), on the rows' device.

        A vector that starts at task ``first`` (PCD's τ: 1) covers the kept tasks after the
        first ``first`` of them, which become the step's primary ones.
        """
        for option, vector in self._task_vectors.items():
            first = len(self.task_names) - len(vector)
            entries = torch.tensor([index - first for index in kept[first:]], dtype=torch.long)
            setattr(self.aggregator, option, vector[entries].to(device))

    def _combine(
        self, scaled_rows: torch.Tensor, loss_scale: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``s · A(J)`` and the row weights, for ``J = scaled_rows / s``, ``s = loss_scale``.

        A weighted aggregator's weights w(J) are applied to the scaled rows. An aggregator that
        does not weigh rows (GradDrop, ConFIG) gives ``s · A(J)`` itself, reported through the
        least-squares weights ``w = (J Jᵀ)⁺ J A(J)``, which do not depend on s.

        A non-finite Jacobian (an fp16 overflow) gets weight 1 per row instead: its non-finite
        sum makes the AMP scaler skip the step, as for any overflow, where CAGrad's and
        Nash-MTL's solvers would raise and MGDA's and UPGrad's would return NaN weights.
        """
        from torchjd.aggregation import WeightedAggregator  # deferred, see AGGREGATORS

        if not torch.isfinite(scaled_rows).all():
            weights = torch.ones(len(scaled_rows), device=scaled_rows.device)
            return weights @ scaled_rows, weights
        if isinstance(self.aggregator, WeightedAggregator):
            weights = self.aggregator.weighting(scaled_rows / loss_scale)
            return weights @ scaled_rows, weights
        gradient = self.aggregator(scaled_rows / loss_scale) * loss_scale
        gramian = scaled_rows @ scaled_rows.T
        return gradient, torch.linalg.pinv(gramian) @ (scaled_rows @ gradient)


def aggregation_balancer_factory(name: str) -> Callable[..., JacobianAggregationBalancer]:
    """``factory(tasks, parallel_chunk_size=None, **aggregator_options)`` for registry entry
    ``name``."""

    def create(
        tasks: Sequence[Task], parallel_chunk_size: int | None = None, **options: Any
    ) -> JacobianAggregationBalancer:
        aggregator = build_aggregator(name, len(tasks), **options)
        return JacobianAggregationBalancer(tasks, aggregator, parallel_chunk_size)

    create.__name__ = f"create_{name}_balancer"
    return create
