"""Engine: typed config, optimisers and schedules, checkpoints, the train / eval loop, DDP, logs.

Reports and sweeps, which only read finished runs or drive ``train``, live in
:mod:`densetasks.experiments`.
"""

from densetasks.engine.config import RunConfig, load_config
from densetasks.engine.run import LoadedRun, evaluate_run, load_run, train

__all__ = ["LoadedRun", "RunConfig", "evaluate_run", "load_config", "load_run", "train"]
