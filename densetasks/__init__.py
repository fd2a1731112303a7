"""densetasks: dense multi-task learning for computer vision.

The public API, flat (see ``docs/design.md`` for the five nouns behind it)::

    from densetasks import create_task, create_model, create_balancer, create_dataset
"""

from densetasks.balancers import BALANCERS, create_balancer
from densetasks.data import (
    DATASETS,
    SyntheticScenes,
    build_transforms,
    collate_samples,
    create_dataset,
)
from densetasks.engine import evaluate_run, load_config, load_run, train
from densetasks.metrics.delta_m import delta_m
from densetasks.models import ARCHITECTURES, ENCODERS, create_model
from densetasks.tasks import TASKS, create_task

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES",
    "BALANCERS",
    "DATASETS",
    "ENCODERS",
    "TASKS",
    "SyntheticScenes",
    "build_transforms",
    "collate_samples",
    "create_balancer",
    "create_dataset",
    "create_model",
    "create_task",
    "delta_m",
    "evaluate_run",
    "load_config",
    "load_run",
    "train",
]
