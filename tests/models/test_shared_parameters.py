"""``Architecture.shared_parameters()`` means the same for every registered architecture
(``models/base.py``): the parameters every task's loss reaches, but a task's own branch.

Checked from the gradients of the real task losses on a synthetic batch, one task at a time:
every shared parameter takes part in every task's loss (a gradient, possibly zero at the
initialisation); and, with two tasks or more, a parameter that every task's loss reaches is
shared unless only one task's auxiliary outputs reach it (a branch of that task that the
others read through cross-task distillation: PAD-Net, the 3-ways mTEB)."""

from collections.abc import Mapping

import pytest
import torch

from densetasks.data import SyntheticScenes
from densetasks.data.collate import collate_samples
from densetasks.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from densetasks.engine.loop import task_losses
from densetasks.engine.passes import condition_inputs
from densetasks.models import ARCHITECTURES, create_model
from densetasks.models.base import Architecture
from densetasks.tasks.base import Task
from densetasks.tasks.registry import create_task, label_kinds

from ..conftest import SPEED_OPTIONS, architecture_encoder, architecture_tasks

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: fastest on one thread


def synthetic_batch() -> dict:
    """Two normalised 32 px synthetic scenes with every label."""
    scenes = SyntheticScenes(2, size=(32, 32), seed=0)
    batch = collate_samples([scenes[0], scenes[1]], label_kinds())
    mean, std = (torch.tensor(v)[None, :, None, None] for v in (IMAGENET_MEAN, IMAGENET_STD))
    return {**batch, "image": (batch["image"] - mean) / std}


def reached(model: Architecture, loss: torch.Tensor) -> set[str]:
    """Names of the parameters ``loss`` reaches (a gradient, zero or not)."""
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name for name, p in model.named_parameters() if p.grad is not None}


def check_shared_parameters(model: Architecture, tasks: Mapping[str, Task], batch: dict) -> None:
    """Assert the definition of ``shared_parameters()`` for ``model`` on ``batch``."""
    model.train()
    conditions = condition_inputs(model, batch, torch.Generator().manual_seed(0))

    def losses() -> dict[str, torch.Tensor]:
        raw = model(batch["image"], **conditions)
        adapted = model.output_adapter(raw, tasks, conditions)
        return task_losses(tasks, adapted, batch, model.auxiliary_outputs)

    by_task = {name: reached(model, losses()[name]) for name in tasks}
    by_auxiliary: dict[str, set[str]] = {}
    for auxiliary in model.auxiliary_outputs:
        task = tasks[auxiliary.task]
        raw = model(batch["image"], **conditions)
        output = task.resize_output(raw[auxiliary.key].float(), batch["image"].shape[-2:])
        by_auxiliary.setdefault(auxiliary.task, set()).update(
            reached(model, task.loss(output, task.target(batch)))
        )
    ids = {id(p) for p in model.shared_parameters()}
    shared = {name for name, p in model.named_parameters() if id(p) in ids}
    every = set.intersection(*by_task.values())
    assert shared <= every, f"shared but not reached by every task: {sorted(shared - every)[:5]}"
    if len(tasks) > 1:
        own = {n for n in every if sum(n in names for names in by_auxiliary.values()) == 1}
        unshared = every - shared - own
        assert not unshared, f"every task's loss reaches, not shared: {sorted(unshared)[:5]}"


@pytest.mark.parametrize("architecture", ARCHITECTURES.names())
def test_shared_parameters_are_what_every_task_reaches_but_a_tasks_own_branch(architecture):
    scenes = SyntheticScenes(1, size=(8, 8))
    names = architecture_tasks(architecture)
    tasks = {name: create_task(name, **scenes.task_options.get(name, {})) for name in names}
    torch.manual_seed(0)
    channels = {name: task.channels for name, task in tasks.items()}
    options = SPEED_OPTIONS.get(architecture, {})
    model = create_model(
        architecture, channels, encoder=architecture_encoder(architecture), **options
    )
    check_shared_parameters(model, tasks, synthetic_batch())


def test_the_check_fails_when_a_shared_parameter_is_left_out():
    """A hard-sharing network that forgot its bottleneck: every task reaches it, so the
    check names it; one that lists a head as shared is named too."""
    tasks = {"depth": create_task("depth"), "normals": create_task("normals")}
    model = create_model("hard_sharing", {"depth": 1, "normals": 3}, encoder="tiny")
    batch = synthetic_batch()
    encoder_only = list(model.encoder.parameters())
    model.shared_parameters = lambda: encoder_only
    with pytest.raises(AssertionError, match="not shared: .*bottleneck"):
        check_shared_parameters(model, tasks, batch)
    with_a_head = [
        *encoder_only,
        *model.bottleneck.parameters(),
        *model.heads["depth"].parameters(),
    ]
    model.shared_parameters = lambda: with_a_head
    with pytest.raises(AssertionError, match="not reached by every task: .*heads.depth"):
        check_shared_parameters(model, tasks, batch)
