"""Engine: typed config, optimisers and schedules, checkpoints, the train / eval loop, DDP, logs.

``train``, ``evaluate_run``, ``load_run`` and ``LoadedRun`` are imported on first use, so
that light submodules (``run_record`` for reports, ``config``) load without the model, task
and data stacks.
"""

from importlib import import_module
from typing import Any

from densetasks.engine.config import RunConfig, load_config

_FROM_RUN = ("LoadedRun", "evaluate_run", "load_run", "train")

__all__ = ["RunConfig", "load_config", *_FROM_RUN]


def __getattr__(name: str) -> Any:
    if name in _FROM_RUN:
        return getattr(import_module("densetasks.engine.run"), name)
    raise AttributeError(f"module 'densetasks.engine' has no attribute {name!r}")
