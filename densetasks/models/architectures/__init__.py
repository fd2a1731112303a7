"""Architectures: how encoder features become one output per task. One per file.

Every architecture takes ``(task_channels, encoder, **its own options)``: the encoder is built
once by :func:`densetasks.models.create_model` (from ``model.encoder``, ``model.pretrained``
and ``model.output_stride``) and handed in, so that any architecture runs on any encoder and
its own options come from one config section, ``model.options`` (``bottleneck`` and ``head``
are options of the hard-sharing ones).
"""

from densetasks._registry import Registry
from densetasks.models.architectures.composite_tasking import CompositeTasking
from densetasks.models.architectures.cross_stitch import CrossStitch
from densetasks.models.architectures.fission import Fission
from densetasks.models.architectures.hard_sharing import HardSharing
from densetasks.models.architectures.invpt import InvPT
from densetasks.models.architectures.mtan import MTAN
from densetasks.models.architectures.mti_net import MTINet
from densetasks.models.architectures.nddr_cnn import NDDR
from densetasks.models.architectures.palette_baselines import MHN, MN, STN
from densetasks.models.architectures.single_task import SingleTask
from densetasks.models.architectures.three_ways import (
    PadNet,
    ThreeWays,
    ThreeWaysMTEB,
    ThreeWaysPadNet,
)
from densetasks.models.base import Architecture

ARCHITECTURES: Registry[Architecture] = Registry("architecture")
"""Architecture name -> class."""

ARCHITECTURES.register("single_task", SingleTask)
ARCHITECTURES.register("hard_sharing", HardSharing)
ARCHITECTURES.register("composite_tasking", CompositeTasking)
ARCHITECTURES.register("composite_stn", STN)
ARCHITECTURES.register("composite_mhn", MHN)
ARCHITECTURES.register("composite_mn", MN)
ARCHITECTURES.register("three_ways", ThreeWays)
ARCHITECTURES.register("three_ways_mteb", ThreeWaysMTEB)
ARCHITECTURES.register("three_ways_padnet", ThreeWaysPadNet)
ARCHITECTURES.register("padnet", PadNet)
ARCHITECTURES.register("fission", Fission)
ARCHITECTURES.register("cross_stitch", CrossStitch)
ARCHITECTURES.register("nddr_cnn", NDDR)
ARCHITECTURES.register("mtan", MTAN)
ARCHITECTURES.register("mti_net", MTINet)
ARCHITECTURES.register("invpt", InvPT)

__all__ = [
    "ARCHITECTURES",
    "MHN",
    "MN",
    "MTAN",
    "NDDR",
    "STN",
    "CompositeTasking",
    "CrossStitch",
    "Fission",
    "HardSharing",
    "InvPT",
    "MTINet",
    "PadNet",
    "SingleTask",
    "ThreeWays",
    "ThreeWaysMTEB",
    "ThreeWaysPadNet",
]
