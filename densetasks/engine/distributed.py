"""Distributed data parallel through ``torchrun``: process group, sums, gradient averaging.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them the run is one
process and every function here is a no-op. The backend is nccl on CUDA and gloo on the CPU.
Only rank 0 writes files; metric states are sums, so a distributed evaluation is one
all-reduce per state.

``torchrun --max-restarts N`` restarts every worker when one dies; the run then resumes
from ``last.pt`` (``densetasks train ... --resume``). With torchrun's default of sharing its
rendezvous store with the workers, a restarted attempt can read the previous attempt's
addresses and fail to connect or hang (pytorch/pytorch#135712; seen here with torch 2.14
and gloo); ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` in torchrun's environment avoids it, and
rank 0 warns when restarts are on without it (:func:`restart_store_warning`).
"""

import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from densetasks.errors import DenseTasksWarning
from densetasks.metrics.base import Metric


@dataclass(frozen=True)
class ProcessInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device_type: str) -> ProcessInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessInfo()
    info = ProcessInfo(
        rank=int(os.environ["RANK"]),
        world_size=world_size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    if info.is_main and (warning := restart_store_warning(os.environ)) is not None:
        warnings.warn(warning, DenseTasksWarning, stacklevel=2)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return info


def restart_store_warning(environment: Mapping[str, str]) -> str | None:
    """The warning for ``torchrun --max-restarts`` with its rendezvous store shared with
    the workers (see the module's docstring), ``None`` when restarts are off or safe."""
    restarts = int(environment.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    if restarts == 0 or environment.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    return (
        f"torchrun --max-restarts {restarts} with its rendezvous store shared: a restarted "
        "attempt can read the last attempt's addresses and hang (pytorch/pytorch#135712); "
        "run torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"
    )


def cleanup_distributed(info: ProcessInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_metric(metric: Metric, info: ProcessInfo) -> None:
    """Sum every state of ``metric`` over all processes (in place; via the GPU under nccl)."""
    if not info.distributed:
        return
    on_gpu = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else None
    for name, state in metric.states().items():
        summed = state.to(device or state.device, copy=True)
        dist.all_reduce(summed)
        metric.set_state(name, summed.to(state.device))


def average_gradients(parameters: Iterable[nn.Parameter], info: ProcessInfo) -> None:
    """Average ``.grad`` over processes for parameters outside the DDP wrapper (balancer)."""
    if not info.distributed:
        return
    for parameter in parameters:
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= info.world_size


def all_reduce_mean(values: torch.Tensor, info: ProcessInfo) -> torch.Tensor:
    """Mean of a tensor over processes (per-task losses for logs and the NaN check)."""
    if not info.distributed:
        return values
    summed = values.detach().clone()
    dist.all_reduce(summed)
    return summed / info.world_size


def max_over_processes(value: int, info: ProcessInfo) -> int:
    """The largest of every process's ``value`` (one integer all-reduce): whether any
    process was asked to stop, so that every process stops after the same step."""
    if not info.distributed:
        return value
    on_gpu = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else None
    largest = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    return int(largest.item())


def barrier(info: ProcessInfo) -> None:
    if info.distributed:
        dist.barrier()
