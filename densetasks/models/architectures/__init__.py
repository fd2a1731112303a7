"""Architectures: how encoder features become one output per task. One per file.

Every architecture takes ``(task_channels, encoder=..., pretrained=..., output_stride=...,
bottleneck=..., head=..., **its own options)`` so that :func:`densetasks.models.create_model`
builds any of them from one config section.
"""

from densetasks._registry import Registry
from densetasks.models.architectures.hard_sharing import HardSharing
from densetasks.models.architectures.single_task import SingleTask
from densetasks.models.base import Architecture

ARCHITECTURES: Registry[Architecture] = Registry("architecture")
"""Architecture name -> class."""

ARCHITECTURES.register("single_task", SingleTask)
ARCHITECTURES.register("hard_sharing", HardSharing)

__all__ = ["ARCHITECTURES", "HardSharing", "SingleTask"]
