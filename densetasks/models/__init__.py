"""Models: encoders, bottlenecks, heads and the architectures built from them.

``create_model`` is the one place where a config meets these classes; the registries let
tests parametrise over every member.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from densetasks.models.adapters import CompositeAdapter, PaletteMaskAdapter
from densetasks.models.architectures import (
    ARCHITECTURES,
    MHN,
    MN,
    STN,
    CompositeTasking,
    Fission,
    HardSharing,
    PadNet,
    SingleTask,
    ThreeWays,
    ThreeWaysMTEB,
    ThreeWaysPadNet,
)
from densetasks.models.base import (
    AdaptedOutputs,
    Architecture,
    AuxiliaryOutput,
    ConditionInput,
    Encoder,
    EvaluationPass,
    EvaluationPlan,
    FeatureSpec,
    OutputAdapter,
    UniformCondition,
    per_task_plan,
)
from densetasks.models.bottlenecks import (
    ASPP,
    BOTTLENECKS,
    EASPP,
    Bottleneck,
    NoBottleneck,
    create_bottleneck,
)
from densetasks.models.composite_blocks import (
    CompositionDecoder,
    TaskComposition,
    TaskRepresentation,
)
from densetasks.models.cross_task import (
    MTEB,
    XTAM,
    CorrelationAttention,
    PadNetDistillation,
    ThreeWaysDecoder,
)
from densetasks.models.encoders import (
    ENCODERS,
    TinyEncoder,
    create_encoder,
    encoders_of,
)
from densetasks.models.heads import HEADS, DeepLabHead, MultiScaleHead, create_head
from densetasks.models.timm_encoder import TimmEncoder
from densetasks.models.vit_pyramid import ViTPyramidEncoder


def create_model(
    architecture: str,
    task_channels: dict[str, int],
    encoder: str = "resnet18",
    pretrained: bool | str | Path = False,
    output_stride: int = 16,
    encoder_options: Mapping[str, Any] | None = None,
    **options: object,
) -> Architecture:
    """Build the registered ``architecture`` for ``{task name: head channels}`` on the
    encoder ``encoder`` (built here, once, with ``pretrained`` weights, ``output_stride`` and
    ``encoder_options`` — timm keyword arguments such as ``drop_path_rate`` — and handed to
    the architecture).

    ``options`` are the architecture's own keyword arguments (``bottleneck``, ``head`` and
    their options for the built-in ones); an unknown name or option raises
    :class:`~densetasks.errors.ConfigError` naming ``model.options`` and the known ones,
    before any weights are built.
    """
    factory = ARCHITECTURES.get(architecture)
    ARCHITECTURES.check_options(
        architecture, task_channels, config_path="model.options", encoder=None, **options
    )
    built = create_encoder(encoder, pretrained, output_stride, **(encoder_options or {}))
    return factory(task_channels, encoder=built, **options)


__all__ = [
    "ARCHITECTURES",
    "ASPP",
    "BOTTLENECKS",
    "EASPP",
    "ENCODERS",
    "HEADS",
    "MHN",
    "MN",
    "MTEB",
    "STN",
    "XTAM",
    "AdaptedOutputs",
    "Architecture",
    "AuxiliaryOutput",
    "Bottleneck",
    "CompositeAdapter",
    "CompositeTasking",
    "CompositionDecoder",
    "ConditionInput",
    "CorrelationAttention",
    "DeepLabHead",
    "Encoder",
    "EvaluationPass",
    "EvaluationPlan",
    "FeatureSpec",
    "Fission",
    "HardSharing",
    "MultiScaleHead",
    "NoBottleneck",
    "OutputAdapter",
    "PadNet",
    "PadNetDistillation",
    "PaletteMaskAdapter",
    "SingleTask",
    "TaskComposition",
    "TaskRepresentation",
    "ThreeWays",
    "ThreeWaysDecoder",
    "ThreeWaysMTEB",
    "ThreeWaysPadNet",
    "TimmEncoder",
    "TinyEncoder",
    "UniformCondition",
    "ViTPyramidEncoder",
    "create_bottleneck",
    "create_encoder",
    "create_head",
    "create_model",
    "encoders_of",
    "per_task_plan",
]
