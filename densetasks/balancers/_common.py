"""Small pieces several balancers share: ordered loss lists, per-task options, DDP averaging,
the backward that replaces the shared gradients."""

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.distributed as dist

from densetasks.errors import ConfigError


def ordered_losses(
    losses: Mapping[str, torch.Tensor], task_names: Sequence[str]
) -> list[torch.Tensor]:
    """The scalar losses in ``task_names`` order, as float32 (AMP losses may be half precision).

    Every task of the run must have a loss (a task without labels in a batch gives a zero that
    keeps the graph, see ``Task.loss``); a missing or an unexpected task is a programming error.
    """
    missing = [name for name in task_names if name not in losses]
    extra = [name for name in losses if name not in task_names]
    if missing or extra:
        raise ValueError(
            f"balancer got losses for {sorted(losses)}, expected {list(task_names)} "
            f"(missing {missing}, unexpected {extra})"
        )
    ordered = [losses[name] for name in task_names]
    for name, loss in zip(task_names, ordered, strict=True):
        if loss.dim() != 0:
            raise ValueError(
                f"loss of task {name!r} must be a scalar, got shape {tuple(loss.shape)}"
            )
    return [loss.float() for loss in ordered]


def per_task_values(
    option: str, values: Mapping[str, float] | None, task_names: Sequence[str], default: float
) -> list[float]:
    """``values`` per task in ``task_names`` order, ``default`` for the tasks it leaves out.

    A value for a task that is not in the run is a configuration error naming the option key.
    """
    values = dict(values or {})
    unknown = sorted(set(values) - set(task_names))
    if unknown:
        raise ConfigError(
            f"balancer option {option!r} names tasks {unknown} that are not in the run "
            f"(tasks: {list(task_names)})"
        )
    return [float(values.get(name, default)) for name in task_names]


def trainable_shared(
    shared_parameters: Iterable[torch.nn.Parameter], method: str
) -> list[torch.nn.Parameter]:
    """The shared parameters that require grad, which a balancer combining shared gradients
    itself works on; a ``ValueError`` naming ``method`` when there is none."""
    shared = [parameter for parameter in shared_parameters if parameter.requires_grad]
    if not shared:
        raise ValueError(f"{method} needs at least one shared parameter that requires grad")
    return shared


def average_across_processes(tensors: Iterable[torch.Tensor]) -> None:
    """Average each tensor in place over the processes of a ``torch.distributed`` run.

    A no-op without ``torch.distributed``. Balancers are not wrapped in
    ``DistributedDataParallel``: without this their learnable state would drift apart on each
    process, since each one sees different losses.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world_size = dist.get_world_size()
    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(world_size)


def backward_with_shared_update(
    total: torch.Tensor,
    shared: Sequence[torch.nn.Parameter],
    scale: Callable[[torch.Tensor], torch.Tensor],
    shared_update: Sequence[torch.Tensor],
) -> None:
    """Backward of ``scale(total)``, then every shared parameter's gradient becomes what it
    held before plus its piece of ``shared_update`` instead of what the plain backward left.

    The plain backward runs DDP's hooks, so task-specific gradients are averaged as usual;
    gradients are replaced in place (DDP's bucket views stay valid). The balancers that
    combine shared gradients themselves (the Jacobian aggregators, DB-MTL) end with this.
    """
    previous = [None if parameter.grad is None else parameter.grad.clone() for parameter in shared]
    if total.requires_grad:
        scale(total).backward()
    for parameter, before, piece in zip(shared, previous, shared_update, strict=True):
        new_gradient = piece if before is None else before + piece
        if parameter.grad is None:
            parameter.grad = new_gradient
        else:
            parameter.grad.copy_(new_gradient)
