"""Engine: typed config, optimisers and schedules, checkpoints, the train / eval loop, DDP, logs.

Loading a trained run and predicting with it (the one inference path that ``predict``,
``export`` and ``serve`` share) is :mod:`densetasks.engine.inference`. Reports and sweeps,
which only read finished runs or drive ``train``, live above in :mod:`densetasks.experiments`.
"""

from densetasks.engine.config import RunConfig, load_config
from densetasks.engine.inference import LoadedRun, Prediction, Predictor, load_run
from densetasks.engine.run import evaluate_run, train

__all__ = [
    "LoadedRun",
    "Prediction",
    "Predictor",
    "RunConfig",
    "evaluate_run",
    "load_config",
    "load_run",
    "train",
]
