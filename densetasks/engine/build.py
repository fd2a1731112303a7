"""The one place where the config meets objects: datasets, loaders, tasks, model, balancer.

Every other engine module receives built objects and never reads the config's nouns.
"""

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from densetasks.balancers import BALANCERS, create_balancer
from densetasks.balancers.base import Balancer
from densetasks.balancers.fixed import equal_balancer
from densetasks.data.collate import collate_samples
from densetasks.data.dataset import DenseDataset
from densetasks.data.registry import create_dataset
from densetasks.data.sample import LabelKind
from densetasks.data.transforms import Compose, build_transforms
from densetasks.data.unlabelled import UnlabelledImages
from densetasks.engine.adversarial import DomainAdversary
from densetasks.engine.config import RunConfig
from densetasks.engine.distributed import ProcessInfo
from densetasks.engine.sampling import SeededSamples, StepSampler, shard_indices
from densetasks.engine.signals import ignore_stop_signals
from densetasks.errors import ConfigError, DataError
from densetasks.models import create_model, encoders_of
from densetasks.models.base import Architecture
from densetasks.tasks.base import Task
from densetasks.tasks.registry import adaptable_tasks, create_task, label_kinds


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' was asked for but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def open_dataset(config: RunConfig, split: str) -> DenseDataset:
    """The configured dataset's ``split``, without transform (see :func:`attach_transform`)."""
    options: dict[str, Any] = dict(config.data.options)
    if config.data.root is not None:
        options["root"] = config.data.root
    return create_dataset(config.data.dataset, split, label_kinds(), **options)


def open_training_dataset(config: RunConfig) -> DenseDataset:
    """The ``data.train_split`` of the dataset (see :func:`open_dataset`).

    An empty split is a :class:`DataError` naming the split and the dataset, raised before
    the run builds or writes anything (the sampler could only say "empty" much later).
    """
    dataset = open_dataset(config, config.data.train_split)
    if len(dataset) == 0:
        raise DataError(
            f"training split {config.data.train_split!r} of {_describe_dataset(config)} "
            "has no samples (data.train_split)"
        )
    return dataset


def open_target_dataset(config: RunConfig, split: str) -> DenseDataset:
    """Split ``split`` of ``data.target`` (a domain-adaptation run), without transform."""
    target = config.data.target
    if target is None:
        raise ConfigError("data.target: this run has no target dataset")
    options: dict[str, Any] = dict(target.options)
    if target.root is not None:
        options["root"] = target.root
    try:
        return create_dataset(
            target.dataset, split, label_kinds(), config_path="data.target", **options
        )
    except DataError as error:
        raise DataError(f"data.target: {error}") from None


def open_target_training_images(config: RunConfig) -> UnlabelledImages:
    """The target's ``train_split`` with its labels removed (:mod:`densetasks.data.unlabelled`):
    unsupervised adaptation never sees a target label. Empty is a :class:`DataError`."""
    split = config.data.target.train_split
    images = UnlabelledImages(open_target_dataset(config, split))
    if len(images) == 0:
        raise DataError(f"data.target.train_split {split!r} has no samples")
    return images


def check_target_labels(
    config: RunConfig, tasks: Mapping[str, Task], source: DenseDataset, target: DenseDataset
) -> None:
    """The target must label every task (it is scored on them) with the same task options
    the source gives (e.g. the same classes): otherwise a :class:`ConfigError` naming
    ``data.target``."""
    name = config.data.target.dataset
    missing = [
        label
        for task in tasks.values()
        for label in task.label_sources
        if target.tasks and label not in target.tasks
    ]
    if missing:
        raise ConfigError(
            f"data.target: dataset {name!r} has no {missing} labels; the run's tasks are "
            f"{list(tasks)} and it provides {list(target.tasks)}"
        )
    for task in tasks:
        own, theirs = source.task_options.get(task, {}), target.task_options.get(task, {})
        differing = sorted(key for key in own.keys() & theirs.keys() if own[key] != theirs[key])
        if differing:
            raise ConfigError(
                f"data.target: dataset {name!r} gives tasks.{task} other {differing} than "
                f"the source dataset {config.data.dataset!r}"
            )


def build_adversary(
    config: RunConfig, tasks: Mapping[str, Task], model: Architecture
) -> DomainAdversary:
    """Discriminators for every task's outputs (``adaptation``); a task without a
    discriminator input or a model with conditioning inputs is a :class:`ConfigError`."""
    not_adaptable = [name for name, task in tasks.items() if not task.adaptable]
    if not_adaptable:
        raise ConfigError(
            f"adaptation.enabled: task(s) {not_adaptable} define no discriminator input "
            f"(Task.discriminator_input); adaptable tasks: {adaptable_tasks()}"
        )
    if model.condition_inputs:
        names = [spec.name for spec in model.condition_inputs]
        raise ConfigError(
            f"adaptation.enabled: architecture {config.model.architecture!r} needs the "
            f"conditioning input(s) {names}, which target images do not have"
        )
    return DomainAdversary(tasks, model, config.adaptation, config.train.steps)


def _describe_dataset(config: RunConfig) -> str:
    """``dataset 'folder' at /data/x`` (the root when there is one), for error messages."""
    root = config.data.root or config.data.options.get("root")
    at = f" at {root}" if root is not None else ""
    return f"dataset {config.data.dataset!r}{at}"


def build_tasks(config: RunConfig, dataset: DenseDataset) -> dict[str, Task]:
    """Each configured task, with its config options merged over the dataset's."""
    tasks = {}
    for name, options in config.tasks.items():
        task = create_task(name, **{**dataset.task_options.get(name, {}), **options})
        missing = [label for label in task.label_sources if label not in dataset.tasks]
        if dataset.tasks and missing:
            raise ConfigError(
                f"tasks.{name}: dataset {config.data.dataset!r} has no {missing} labels; "
                f"it provides {list(dataset.tasks)}"
            )
        tasks[name] = task
    return tasks


def rebuild_tasks(task_options: Mapping[str, Mapping[str, Any]]) -> dict[str, Task]:
    """Tasks from the options a checkpoint stored (no dataset needed)."""
    return {name: create_task(name, **options) for name, options in task_options.items()}


def run_label_kinds(tasks: Mapping[str, Task], model: Architecture) -> dict[str, LabelKind]:
    """How transforms and collate treat every tensor of this run's samples: the registered
    tasks' labels, this run's tasks, and the model's conditioning inputs (a palette)."""
    own = {name: task.label_kind for name, task in tasks.items()}
    conditions = {spec.name: spec.kind for spec in model.condition_inputs}
    return label_kinds({**own, **conditions})


def eval_transform(config: RunConfig, tasks: Mapping[str, Task], model: Architecture) -> Compose:
    """Deterministic evaluation transform: resize to ``data.eval_size`` (if set), normalise."""
    kinds = run_label_kinds(tasks, model)
    return build_transforms(train=False, size=config.data.eval_size, kinds=kinds)


def attach_transform(
    config: RunConfig,
    dataset: DenseDataset,
    tasks: Mapping[str, Task],
    model: Architecture,
    train: bool,
) -> DenseDataset:
    """Set the training (random scale-crop, flip, jitter) or evaluation transform."""
    if not train:
        dataset.transform = eval_transform(config, tasks, model)
        return dataset
    data = config.data
    dataset.transform = build_transforms(
        train=True,
        size=data.crop_size,
        scale_range=data.scale_range,
        flip=data.flip,
        color_jitter=data.color_jitter,
        kinds=run_label_kinds(tasks, model),
    )
    return dataset


TARGET_SEED_OFFSET = 2**31
"""The target images' order and augmentations are drawn from ``seed + TARGET_SEED_OFFSET``,
so they are not those of the source images at the same positions."""


def train_loader(
    config: RunConfig,
    dataset: DenseDataset,
    kinds: Mapping[str, LabelKind],
    start_step: int,
    process: ProcessInfo,
    seed: int | None = None,
) -> DataLoader:
    """Batches of steps ``start_step ..`` in the order fixed by (seed, step); see sampling.
    ``seed`` defaults to the run's."""
    sampler = StepSampler(
        len(dataset),
        config.data.batch_size,
        config.train.steps,
        config.seed if seed is None else seed,
        start_step=start_step,
        rank=process.rank,
        world_size=process.world_size,
    )
    return DataLoader(
        SeededSamples(dataset),
        batch_size=config.data.batch_size,
        sampler=sampler,
        num_workers=config.data.workers,
        collate_fn=partial(collate_samples, kinds=dict(kinds)),
        persistent_workers=config.data.workers > 0,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator(),  # worker seeds never draw from the global stream
        worker_init_fn=ignore_stop_signals,
    )


def eval_loader(
    config: RunConfig, dataset: DenseDataset, kinds: Mapping[str, LabelKind], process: ProcessInfo
) -> DataLoader:
    """This process's shard of an evaluation split, in order, every sample once."""
    shard = Subset(dataset, shard_indices(len(dataset), process.rank, process.world_size))
    return DataLoader(
        shard,
        batch_size=config.eval.batch_size or config.data.batch_size,
        shuffle=False,
        num_workers=config.data.workers,
        collate_fn=partial(collate_samples, kinds=dict(kinds)),
        generator=torch.Generator(),
        worker_init_fn=ignore_stop_signals,
    )


def build_model(config: RunConfig, tasks: Mapping[str, Task]) -> Architecture:
    """The configured architecture for these tasks; ``model.options`` are checked against the
    architecture's signature (a misspelled option names ``model.options``),
    ``model.encoder_options`` against the timm network's; ``train.grad_checkpointing`` turns
    on activation checkpointing in every encoder."""
    model = config.model
    built = create_model(
        model.architecture,
        {name: task.channels for name, task in tasks.items()},
        encoder=model.encoder,
        pretrained=model.pretrained,
        output_stride=model.output_stride,
        encoder_options=model.encoder_options,
        **model.options,
    )
    if config.train.grad_checkpointing:
        for encoder in encoders_of(built):
            encoder.set_grad_checkpointing(True)
    return built


PLAIN_BALANCERS = ("fixed", "equal")
"""Balancers that with every weight 1 are the plain sum of the task losses."""


def build_balancer(config: RunConfig, tasks: Mapping[str, Task], model: Architecture) -> Balancer:
    """The configured balancer, handed what it declares it needs of the model (the last
    shared layer: GradNorm's W). A single-task run gets the plain loss whatever is configured
    (:func:`single_task_balancer_note`)."""
    if single_task_balancer_note(config, tasks) is not None:
        return equal_balancer(list(tasks.values()))
    options = dict(config.balancer.options)
    if config.balancer.weights:
        options["weights"] = dict(config.balancer.weights)
    balancer = create_balancer(config.balancer.name, list(tasks.values()), **options)
    if balancer.needs_last_shared_layer:
        balancer.use_last_shared_layer(_last_shared_layer(model, config.balancer.name))
    return balancer


def _last_shared_layer(model: Architecture, balancer: str) -> list[torch.nn.Parameter]:
    """The model's last shared layer; an architecture without one is a ConfigError."""
    try:
        return model.last_shared_layer()
    except ValueError as error:
        raise ConfigError(f"balancer.name: {balancer} needs a shared layer: {error}") from None


def single_task_balancer_note(config: RunConfig, tasks: Mapping[str, Task]) -> str | None:
    """Why a single-task run does not use its configured balancer, or ``None`` when it does.

    One task has nothing to balance: a weighting balancer would only rescale its loss (the
    learned σ of ``uncertainty`` turns L into L/(2σ²) + log σ, Kendall et al., CVPR 2018,
    Eq. 7) and add state of its own, so a single-task baseline that inherits a multi-task
    config's balancer (``--set model.architecture=single_task``) would not train on the loss
    its name promises. Such a run trains on the plain loss instead, and the run log says so
    once. A balancer of the plain sum (``equal``, or ``fixed`` with every weight 1) is kept
    silently. The name is still checked, so a typo fails as in any run.
    """
    if len(tasks) != 1:
        return None
    balancer = config.balancer
    BALANCERS.get(balancer.name)
    weights = {**balancer.options.get("weights", {}), **balancer.weights}
    others = sorted(set(balancer.options) - {"weights"})
    if balancer.name in PLAIN_BALANCERS and not others and set(weights.values()) <= {1.0}:
        return None
    (task,) = tasks
    configured = f"balancer {balancer.name!r}" + (f" with weights {weights}" if weights else "")
    return (
        f"single-task run ({task}): {configured} is not used; one task has nothing to "
        "balance, so the run trains on its plain loss"
    )
