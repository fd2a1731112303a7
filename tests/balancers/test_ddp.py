"""Balancers under DistributedDataParallel (2 CPU processes, gloo), on one two-head problem.

Gradient aggregation: each process aggregates the Jacobian of its own batch; the shared
parameters must end with the mean of the per-process aggregations on every rank (so the
replicas stay identical), and the task heads with DDP's usual mean of plain gradients.

DB-MTL's own backward averages the per-task gradients of ``log L_t`` over the processes before
its EMA, and DDP averages the head gradients, so every rank sees ``mean_r ∇ log L_t^r``. That
is exactly the gradient of ``log L'_t`` for the geometric mean ``L'_t = exp(mean_r log L_t^r)``
of the ranks' losses, so the reference is one process running DB-MTL on ``L'``: after two
steps both ranks must hold its gradients, and their EMAs must agree.
"""

import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from densetasks.balancers import create_balancer
from densetasks.tasks.base import Likelihood


class _Task:
    def __init__(self, name: str) -> None:
        self.name = name
        self.likelihood = Likelihood.REGRESSION


DB_MTL_STEPS = 2


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(3, 4)
        self.first = nn.Linear(4, 1)
        self.second = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = torch.tanh(self.shared(x))
        return {"a": self.first(features), "b": self.second(features)}


def _losses(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"a": outputs["a"].square().mean(), "b": (outputs["b"] - 1.0).abs().mean()}


def _aggregator_worker(rank: int, port: int, result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = _TwoHeads()
    reference = copy.deepcopy(model)  # same weights, no DDP: this rank's own aggregation
    torch.manual_seed(100 + rank)
    batch = torch.randn(5, 3)
    tasks = [_Task("a"), _Task("b")]

    wrapped = DistributedDataParallel(model)
    balancer = create_balancer("upgrad", tasks)
    balancer.backward(_losses(wrapped(batch)), list(model.shared.parameters()))

    local = create_balancer("upgrad", tasks)
    dist.destroy_process_group()  # the reference aggregates this rank's Jacobian alone
    local.backward(_losses(reference(batch)), list(reference.shared.parameters()))
    torch.save(
        {
            "ddp": {key: p.grad.clone() for key, p in model.named_parameters()},
            "local": {key: p.grad.clone() for key, p in reference.named_parameters()},
        },
        os.path.join(result_dir, f"rank{rank}.pt"),
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow  # two fresh interpreters import torch and TorchJD
def test_shared_gradients_are_the_mean_of_per_process_aggregations(tmp_path):
    mp.spawn(_aggregator_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    for key in ranks[0]["ddp"]:
        mean_local = (ranks[0]["local"][key] + ranks[1]["local"][key]) / 2
        assert torch.allclose(ranks[0]["ddp"][key], ranks[1]["ddp"][key]), key
        assert torch.allclose(ranks[0]["ddp"][key], mean_local, atol=1e-6), key
    assert not torch.allclose(
        ranks[0]["local"]["shared.weight"], ranks[1]["local"]["shared.weight"]
    )


def _model() -> _TwoHeads:
    torch.manual_seed(0)
    return _TwoHeads()


def _batch(rank: int) -> torch.Tensor:
    return torch.randn(5, 3, generator=torch.Generator().manual_seed(100 + rank))


def _tasks() -> list[_Task]:
    return [_Task("a"), _Task("b")]


def _db_mtl_worker(rank: int, port: int, result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    model = _model()
    wrapped = DistributedDataParallel(model)
    balancer = create_balancer("db_mtl", _tasks())
    for _ in range(DB_MTL_STEPS):
        model.zero_grad(set_to_none=True)
        balancer.backward(_losses(wrapped(_batch(rank))), list(model.shared.parameters()))
    torch.save(
        {
            "grads": {key: p.grad.clone() for key, p in model.named_parameters()},
            "ema": balancer.gradient_ema.clone(),
        },
        os.path.join(result_dir, f"rank{rank}.pt"),
    )
    dist.destroy_process_group()


def _reference() -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """One process, DB-MTL on the geometric mean of the two ranks' losses."""
    model = _model()
    balancer = create_balancer("db_mtl", _tasks())
    for _ in range(DB_MTL_STEPS):
        model.zero_grad(set_to_none=True)
        per_rank = [_losses(model(_batch(rank))) for rank in (0, 1)]
        geometric = {
            task: torch.exp((per_rank[0][task].log() + per_rank[1][task].log()) / 2)
            for task in ("a", "b")
        }
        balancer.backward(geometric, list(model.shared.parameters()))
    grads = {key: p.grad.clone() for key, p in model.named_parameters()}
    alone = _model()  # rank 0's batch alone: what DDP must not give
    lone = create_balancer("db_mtl", _tasks())
    lone.backward(_losses(alone(_batch(0))), list(alone.shared.parameters()))
    return grads, balancer.gradient_ema, {k: p.grad for k, p in alone.named_parameters()}


@pytest.mark.slow  # two fresh interpreters import torch
def test_every_rank_steps_as_db_mtl_on_the_ranks_mean_log_losses(tmp_path):
    mp.spawn(_db_mtl_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    expected, expected_ema, alone = _reference()
    assert torch.allclose(ranks[0]["ema"], ranks[1]["ema"])
    assert torch.allclose(ranks[0]["ema"], expected_ema, atol=1e-6)
    for key, gradient in expected.items():
        for rank in ranks:
            assert torch.allclose(rank["grads"][key], gradient, atol=1e-6), key
    assert not torch.allclose(ranks[0]["grads"]["shared.weight"], alone["shared.weight"])
