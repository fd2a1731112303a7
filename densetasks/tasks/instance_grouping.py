"""Drawing grouped instance ids the way the instance task draws them.

The grouping itself (OPTICS on centroid votes, Kendall et al., CVPR 2018, Sec. 4) lives in
:mod:`densetasks.metrics.instance_grouping`, since evaluation needs it and the metrics never
import the tasks.
"""

import numpy as np
import torch

from densetasks.tasks.instance import InstanceOffsets


def draw_instances(ids: torch.Tensor) -> np.ndarray:
    """An id map ``[H, W]`` as ``uint8 [H, W, 3]``: one fixed colour per id, 0 black.

    The colours are the instance task's (golden-ratio hue steps): stable across images and
    runs without a random generator, and the same as ``densetasks predict`` draws labels.
    """
    if ids.ndim != 2 or ids.is_floating_point():
        raise ValueError(f"instance ids must be an integer [H, W] tensor, got {tuple(ids.shape)}")
    return InstanceOffsets().visualize(ids)
