"""Task Palette prediction: the palette a semantic rule would paint, predicted from the image.

Popovic et al., CVPR 2021, Sec. 6.2 / Fig. 8: "A separate network is learned to predict the
Task Palette", so that a CompositeTasking network runs on an image without a hand-made
palette. Here that network is any architecture trained on the task ``task_palette``: a
segmentation into the CompositeTasking run's tasks, whose label is painted on the fly from
the batch's ground-truth class map. (The batch key ``palette`` is the conditioning input of
CompositeTasking models, hence another name.)
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch

from densetasks.data.palettes import NO_TASK, SemanticRule, create_palette_rule
from densetasks.errors import ConfigError
from densetasks.tasks.semseg import SemanticSegmentation


class TaskPalette(SemanticSegmentation):
    """Per-pixel classification into ``tasks`` (the CompositeTasking run's task order): the
    label of a pixel is the id of the task that palette rule ``rule`` asks for there.

    Only the semantic rules (R2, R3, Popovic et al., CVPR 2021, supplementary C) qualify:
    their palette follows the image's content, while a random rule's (R1r, Rrnd) cannot be
    predicted from the image. ``rule_options`` are the rule's (``table``, ``classes``,
    ``semantic_task``). Pixels the rule leaves without a task (``NO_TASK``: unlabelled or
    unlisted classes) are ignored. Loss, metrics (mIoU over the tasks) and pictures are those
    of :class:`SemanticSegmentation`.
    """

    name = "task_palette"
    example_options = MappingProxyType(
        {
            "tasks": ["semseg", "parts", "edges", "saliency", "normals"],
            "rule_options": {"table": "synthetic_r2"},
        }
    )
    """The synthetic scenes' rule R2 (``docs/palettes.md``) over the tasks it asks for."""

    def __init__(
        self,
        *,
        tasks: list[str],
        rule: str = "R2",
        rule_options: dict[str, Any] | None = None,
        focal_gamma: float = 0.0,
        composite_eps: float = 1e-8,
    ) -> None:
        if not tasks or len(set(tasks)) != len(tasks):
            raise ConfigError(f"{self.name}.tasks must name distinct tasks, got {tasks}")
        palette_rule = create_palette_rule(
            rule, config_path=f"{self.name}.rule_options", **(rule_options or {})
        )
        if not isinstance(palette_rule, SemanticRule):
            raise ConfigError(
                f"{self.name}.rule must be a semantic rule (R2, R3), got {rule!r}: only their "
                "palette follows the image's content"
            )
        super().__init__(
            num_classes=len(tasks),
            class_names=list(tasks),
            focal_gamma=focal_gamma,
            composite_eps=composite_eps,
        )
        self.tasks = list(tasks)
        self.palette_rule = palette_rule
        # One unlabelled pixel: a table asking for a task outside ``tasks`` fails here.
        self.paint(torch.full((1, 1, 1), NO_TASK, dtype=torch.int64))

    @property
    def label_sources(self) -> tuple[str, ...]:
        """The dataset label that :meth:`target` reads: the rule's semantic class map."""
        return (self.palette_rule.semantic_task,)

    def target(self, labels: Mapping[str, Any]) -> torch.Tensor | None:
        """The rule's palette painted from ``labels[semantic_task]`` (``[B, H, W]`` class
        ids), ``NO_TASK`` = ignored; ``None`` when the batch has no class map."""
        classes = labels.get(self.palette_rule.semantic_task)
        return None if classes is None else self.paint(classes)

    def paint(self, classes: torch.Tensor) -> torch.Tensor:
        """int64 ``[B, H, W]`` task ids (index into ``tasks``) of a ``[B, H, W]`` class map."""
        batch = {"image": classes.unsqueeze(1), self.palette_rule.semantic_task: classes}
        return self.palette_rule(batch, self.tasks)
