"""Engine: typed config, optimisers and schedules, checkpoints, the train / eval loop, DDP, logs.

Reports and sweeps, which only read finished runs or drive ``train``, live in
:mod:`densetasks.experiments`; loading a run and predicting with it, in
:mod:`densetasks.inference`.
"""

from densetasks.engine.config import RunConfig, load_config
from densetasks.engine.run import evaluate_run, train
from densetasks.inference import LoadedRun, load_run

__all__ = ["LoadedRun", "RunConfig", "evaluate_run", "load_config", "load_run", "train"]
