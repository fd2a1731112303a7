"""One network per task ("columns"), exchanging features after chosen encoder stages: the
common part of cross-stitch networks (Misra et al., CVPR 2016) and NDDR-CNN (Gao et al.,
CVPR 2019), as the survey of Vandenhende et al. (TPAMI 2021) builds both on a ResNet.

Each task has its own encoder (the one ``create_model`` built, then ``encoder.rebuild()`` for
the others), its own bottleneck and head. The columns run stage by stage; after every stage
that has an *exchange unit*, the unit maps ``{task: feature}`` to ``{task: feature}`` of the
same shapes, and each column continues from its own mixed feature. A head reads its column's
features (the mixed ones where a unit sits), so a multi-scale head works as on hard sharing.
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from densetasks.errors import ConfigError
from densetasks.models.base import Architecture, Encoder, FeatureSpec
from densetasks.models.bottlenecks import create_bottleneck
from densetasks.models.heads import create_head


def check_task_channels(task_channels: dict[str, int]) -> None:
    """Raise :class:`ConfigError` unless there is a task and every channel count is positive."""
    if not task_channels:
        raise ConfigError("the architecture needs at least one task")
    bad = {task: channels for task, channels in task_channels.items() if channels < 1}
    if bad:
        raise ConfigError(f"task channel counts must be positive, got {bad}")


def check_stages(key: str, stages: Sequence[int], count: int) -> tuple[int, ...]:
    """``stages`` sorted, each an encoder stage index ``0 .. count - 1``, at least one;
    anything else is a :class:`ConfigError` naming ``model.options.<key>``."""
    bad = [stage for stage in stages if not 0 <= stage < count]
    if bad or not stages:
        raise ConfigError(
            f"model.options.{key}: {list(stages)} must be a non-empty list of encoder stages "
            f"from 0 to {count - 1} (the encoder has {count} stages)"
        )
    return tuple(sorted(set(stages)))


class TaskHead(nn.Module):
    """One task's own bottleneck and head on a feature list: the survey's per-task DeepLab
    head is ASPP (with its projection) + a 3×3 conv, BN, ReLU and a 1×1 classifier."""

    def __init__(
        self,
        feature_info: list[FeatureSpec],
        out_channels: int,
        bottleneck: str,
        head: str,
        bottleneck_options: dict[str, Any],
        head_options: dict[str, Any],
    ) -> None:
        super().__init__()
        self.bottleneck = create_bottleneck(bottleneck, feature_info, **bottleneck_options)
        self.head = create_head(head, self.bottleneck.feature_info, out_channels, **head_options)

    def forward(self, features: list[torch.Tensor], size: torch.Size) -> torch.Tensor:
        return self.head(self.bottleneck(features), size)


def task_heads(
    task_channels: dict[str, int],
    feature_info: list[FeatureSpec],
    bottleneck: str,
    head: str,
    bottleneck_options: dict[str, Any] | None,
    head_options: dict[str, Any] | None,
) -> nn.ModuleDict:
    """A :class:`TaskHead` per task; an ASPP projects back to its width unless
    ``bottleneck_options`` say ``project: false`` (the survey's DeepLab head projects)."""
    defaults = {"project": True} if bottleneck == "aspp" else {}
    bottleneck_options = {**defaults, **(bottleneck_options or {})}
    return nn.ModuleDict(
        {
            task: TaskHead(
                feature_info, channels, bottleneck, head, bottleneck_options, head_options or {}
            )
            for task, channels in task_channels.items()
        }
    )


def stage_parameter_names(encoder: Encoder) -> list[list[str]]:
    """The names of the parameters each stage of ``encoder`` uses, stage by stage.

    The :class:`~densetasks.models.base.Encoder` contract runs stages but does not say which
    parameters they hold, so this asks autograd: a parameter belongs to the first stage
    whose output depends on it (one evaluation-mode forward of a small random image; the
    batch-norm statistics are not touched).
    """
    names = [name for name, _ in encoder.named_parameters()]
    parameters = [parameter for _, parameter in encoder.named_parameters()]
    side = 2 * encoder.feature_info[-1].stride
    reference = parameters[0] if parameters else torch.empty(0)
    image = torch.randn(
        2,
        3,
        side,
        side,
        generator=torch.Generator().manual_seed(0),
        dtype=reference.dtype,
    ).to(reference.device)
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.enable_grad():
            outputs = encoder(image)
            reached = [
                torch.autograd.grad(output.sum(), parameters, retain_graph=True, allow_unused=True)
                for output in outputs
            ]
    finally:
        encoder.train(was_training)
    seen: set[str] = set()
    stages = []
    for gradients in reached:
        stage = [
            name
            for name, gradient in zip(names, gradients, strict=True)
            if gradient is not None and name not in seen
        ]
        seen.update(stage)
        stages.append(stage)
    return stages


class ColumnNetwork(Architecture):
    """One encoder, bottleneck and head per task, with an exchange unit after each of
    ``unit_stages``, built by ``make_unit(tasks, channels)``.

    ``shared_parameters()``: every column's stages up to the last unit (their features reach
    every task through that unit) and every unit but the last (whose output for task ``t``
    only task ``t`` reads). Stages after the last unit and the heads are each task's own.
    """

    def __init__(
        self,
        task_channels: dict[str, int],
        encoder: Encoder,
        unit_stages: Sequence[int],
        units_key: str,
        make_unit: Callable[[list[str], int], nn.Module],
        bottleneck: str,
        head: str,
        bottleneck_options: dict[str, Any] | None,
        head_options: dict[str, Any] | None,
    ) -> None:
        check_task_channels(task_channels)
        super().__init__(task_channels)
        info = encoder.feature_info
        self.unit_stages = check_stages(units_key, unit_stages, len(info))
        tasks = list(task_channels)
        self.columns = nn.ModuleDict(
            {task: encoder if index == 0 else encoder.rebuild() for index, task in enumerate(tasks)}
        )
        self.units = nn.ModuleDict(
            {str(stage): make_unit(tasks, info[stage].channels) for stage in self.unit_stages}
        )
        self.heads = task_heads(
            task_channels, info, bottleneck, head, bottleneck_options, head_options
        )
        self._stage_names = stage_parameter_names(encoder)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = dict.fromkeys(self.columns, image)
        features: dict[str, list[torch.Tensor]] = {task: [] for task in self.columns}
        for stage in range(len(self._stage_names)):
            x = {
                task: column.forward_stages(x[task], stage, stage + 1)[0]
                for task, column in self.columns.items()
            }
            if str(stage) in self.units:
                x = self.units[str(stage)](x)
            for task, feature in x.items():
                features[task].append(feature)
        size = image.shape[-2:]
        return {task: head(features[task], size) for task, head in self.heads.items()}

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.columns.parameters())

    def shared_parameters(self) -> list[nn.Parameter]:
        """In data-flow order: stage by stage, every column's parameters of that stage, then
        the unit after it (the last unit excluded)."""
        last = self.unit_stages[-1]
        shared = []
        for stage, names in enumerate(self._stage_names[: last + 1]):
            for column in self.columns.values():
                shared += [column.get_parameter(name) for name in names]
            if str(stage) in self.units and stage != last:
                shared += list(self.units[str(stage)].parameters())
        return shared
