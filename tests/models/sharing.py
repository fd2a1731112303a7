"""Checks of what an architecture shares, and one training step with a given balancer, for
the tests of the architectures with partial sharing (cross-stitch, NDDR-CNN, MTAN, MTI-Net).

``shared_parameters()`` must be exactly the parameters that every task's loss reaches:
gradient-based balancers combine the tasks' gradients on them, so a parameter missing there
escapes the balancing, and one that some task never reaches gets no gradient from it.
"""

import warnings

import torch
from torch import nn

from densetasks.balancers import create_balancer
from densetasks.data import SyntheticScenes, collate_samples
from densetasks.engine.config import TrainConfig
from densetasks.engine.loop import StepParts, train_step
from densetasks.engine.optim import build_optimizer
from densetasks.models import Architecture
from densetasks.tasks.registry import create_task, label_kinds

NEEDS_CVXPY = {"cagrad", "nashmtl"}
"""Balancers that solve with cvxpy (an optional dependency)."""


SMALL = {"bottleneck_options": {"channels": 8}, "head_options": {"channels": 8}}
"""Each task's ASPP and head at 8 channels instead of 256: fast, same structure."""


def reached_by(model: nn.Module, task: str, image: torch.Tensor) -> set[str]:
    """Names of the parameters that get a non-zero gradient from ``task``'s outputs, its main
    and its auxiliary ones (against a target of ones: non-zero for a batch norm's shift too)."""
    model.zero_grad(set_to_none=True)
    outputs = model(image)
    mine = [value for key, value in outputs.items() if key.split("@")[0] == task]
    sum((value - 1).square().mean() for value in mine).backward()
    return {
        name
        for name, parameter in model.named_parameters()
        if parameter.grad is not None and parameter.grad.abs().sum() > 0
    }


def assert_shares_what_every_task_reaches(model: Architecture, image: torch.Tensor) -> None:
    """``shared_parameters()`` is exactly the set every task's loss reaches (in training
    mode), and every parameter is reached by some task."""
    model.train()
    reached = {task: reached_by(model, task, image) for task in model.task_channels}
    every = set.intersection(*reached.values())
    ids = {id(parameter) for parameter in model.shared_parameters()}
    declared = {name for name, parameter in model.named_parameters() if id(parameter) in ids}
    assert len(ids) == len(model.shared_parameters()), "a shared parameter is listed twice"
    assert sorted(declared - every) == [], "declared shared but not reached by every task"
    assert sorted(every - declared) == [], "reached by every task but not declared shared"
    assert set.union(*reached.values()) == {name for name, _ in model.named_parameters()}


def synthetic_batch(tasks: list[str], size: int = 32) -> dict:
    """Two synthetic scenes with every label of ``tasks``, collated."""
    scenes = SyntheticScenes(2, size=(size, size), tasks=tasks)
    return collate_samples([scenes[index] for index in range(2)], label_kinds())


def step_with_balancer(model: Architecture, balancer: str, batch: dict) -> float:
    """One SGD step of ``model`` under ``balancer`` (tasks with the synthetic scenes'
    options); returns the total loss and checks that every parameter got a finite gradient."""
    tasks = {
        name: create_task(name, **({"num_classes": channels} if name == "semseg" else {}))
        for name, channels in model.task_channels.items()
    }
    balance = create_balancer(balancer, list(tasks.values()))
    if balance.needs_last_shared_layer:
        balance.use_last_shared_layer(model.last_shared_layer())
    config = TrainConfig(optimizer="sgd", lr=1e-3, schedule="constant")
    optimizer = build_optimizer(
        config,
        model.encoder_parameters(),
        model.decoder_parameters(),
        balance.parameters(),
    )
    parts = StepParts.on_cpu(model, tasks, balance, optimizer, config)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cvxpy's "problem is not DPP" for Nash-MTL
        result = train_step(parts, batch, 0)
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    return result.total
