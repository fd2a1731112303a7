"""Instance centroid offsets (Kendall et al., CVPR 2018, Sec. 4): each instance pixel regresses the
vector ``(dx, dy)`` in pixels from itself to the centroid of its instance; L1 loss over instance
pixels. With ``instance_classes`` set, evaluation groups the votes ``pixel + offset`` of the pixels
predicted as an instance class into instances (OPTICS, :mod:`densetasks.metrics.instance_grouping`)
and scores their masks with AP (see ``docs/instances.md``).

The target function :func:`~densetasks.data.derive.centroid_offsets`, the evaluation input
:class:`~densetasks.metrics.instance_segmentation.InstancePrediction` and the ground truth with
classes :class:`~densetasks.metrics.instance_ap.InstanceMap` live beside the metrics that read
them (the metrics never import the tasks)."""

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from matplotlib.colors import hsv_to_rgb

from densetasks.data.derive import centroid_offsets
from densetasks.data.sample import LabelKind
from densetasks.errors import ConfigError
from densetasks.metrics.base import Metric
from densetasks.metrics.instance_ap import InstanceMap
from densetasks.metrics.instance_grouping import GroupingConfig, group_instances_batch
from densetasks.metrics.instance_segmentation import (
    InstancePrediction,
    InstanceSegmentationMetrics,
)
from densetasks.metrics.offsets import OffsetErrorMetric
from densetasks.tasks._common import masked_mean
from densetasks.tasks.base import Likelihood, Meaning, Task

NO_GROUPING_OVERRIDES: Mapping[str, Any] = MappingProxyType({})
"""Default ``grouping``: an empty, read-only mapping (every :class:`GroupingConfig` default),
so that the recorded options say ``grouping: {}`` as a config would."""

GOLDEN_RATIO_CONJUGATE = 0.6180339887498949
"""Hue step between consecutive instance ids: neighbouring ids get well-separated colours."""


class InstanceOffsets(Task):
    """Per-pixel 2-D vector to the instance centroid, ``x`` first (Kendall et al., CVPR 2018,
    Sec. 4, Fig. 3).

    Label: INSTANCE ids; the target offsets are computed from them by :func:`centroid_offsets` after
    every transform, so they are exact in the current pixel grid (a horizontal flip of the ids flips
    the offsets' x component by construction). Loss: ``1/|N_I| Σ_{n∈N_I} ‖x_n − x̂_n‖₁`` over the
    instance pixels ``N_I`` within the palette mask (Kendall et al., CVPR 2018): the L1 norm of the
    2-vector (``|dx| + |dy|``) averaged over pixels. ``composite_scale`` is the number of pixels one
    unit of the composite output space stands for.
    """

    name = "instance"
    label_kind = LabelKind.INSTANCE
    likelihood = Likelihood.REGRESSION
    primary_metric = "offset_error"
    picture_colours = "hue = direction, brightness = length"

    def __init__(
        self,
        *,
        composite_scale: float = 32.0,
        instance_classes: Sequence[int] | None = None,
        semantic_task: str = "semseg",
        grouping: Mapping[str, Any] | None = NO_GROUPING_OVERRIDES,
    ) -> None:
        if composite_scale <= 0:
            raise ConfigError(f"{self.name}.composite_scale must be > 0, got {composite_scale}")
        self.composite_scale = composite_scale
        self.instance_classes = None if instance_classes is None else list(instance_classes)
        self.semantic_task = semantic_task
        self.grouping = dict(grouping or {})
        self._grouping_config = self._build_grouping_config()

    def _build_grouping_config(self) -> GroupingConfig:
        known = set(GroupingConfig.__dataclass_fields__)
        unknown = sorted(set(self.grouping) - known)
        if unknown:
            raise ConfigError(
                f"tasks.{self.name}.grouping: unknown key(s) {unknown}; known: {sorted(known)}"
            )
        return GroupingConfig(**self.grouping)

    @property
    def channels(self) -> int:
        return 2

    @property
    def context_tasks(self) -> tuple[str, ...]:
        """With ``instance_classes`` set, evaluation groups the votes of the pixels that the
        ``semantic_task`` predicts as an instance class (Kendall et al., CVPR 2018, Sec. 4)."""
        return () if self.instance_classes is None else (self.semantic_task,)

    def evaluation_input(self, predictions: Mapping[str, torch.Tensor]) -> Any:
        """The offsets alone, or with grouping enabled the offsets and the semantic
        prediction they are grouped with (when the run predicts ``semantic_task``; a
        single-task instance run has no semantics to group with and reports no AP)."""
        if self.instance_classes is None or self.semantic_task not in predictions:
            return predictions[self.name]
        return InstancePrediction(predictions[self.name], predictions[self.semantic_task])

    def evaluation_target(
        self, labels: Mapping[str, torch.Tensor], mask: torch.Tensor | None = None
    ) -> Any:
        """What :meth:`metrics` receives as the ground truth, given the batch's labels: the
        ids, or with grouping enabled and the ``semantic_task`` label present the ids with
        that label, whose classes and void pixels per-class AP needs (Cityscapes protocol,
        ``docs/instances.md``). Pixels outside ``mask`` (a Task Palette) become "no
        instance" and void."""
        ids = labels[self.name]
        if mask is not None:
            ids = self.label_kind.restrict(ids, mask)
        if self.instance_classes is None or self.semantic_task not in labels:
            return ids
        semantic = labels[self.semantic_task]
        if mask is not None:
            semantic = LabelKind.MASK.restrict(semantic, mask)
        return InstanceMap(ids, semantic)

    def group(self, prediction: InstancePrediction) -> torch.Tensor:
        """Instance ids ``[B, H, W]`` from batched offsets and semantic predictions."""
        return group_instances_batch(
            prediction.offsets.detach().cpu(),
            prediction.semantic.cpu(),
            self.instance_classes or [],
            self._grouping_config,
        )

    def loss(
        self, output: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean over instance pixels (within ``mask``) of ``|dx − d̂x| + |dy − d̂y|``."""
        self.check_output(output, label)
        target, instance = centroid_offsets(label)
        per_pixel = (output - target.to(output)).abs().sum(dim=1)
        return masked_mean(per_pixel, self.valid(label, mask) & instance)

    def resize_output(self, output: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Bilinear, then ``dx`` times ``W / w`` and ``dy`` times ``H / h``: the offsets are in
        pixels of the output's grid, so an offset of the small grid becomes one of the large
        grid (inside an instance the result equals the offsets of the large grid's ids)."""
        height, width = output.shape[-2:]
        resized = super().resize_output(output, size)
        scale = torch.tensor([size[1] / width, size[0] / height]).to(resized)
        return resized * scale[None, :, None, None]

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """The offsets as predicted, float ``[B, 2, H, W]`` in pixels."""
        return output

    def meaning(self) -> Meaning:
        """Offsets ``[B, 2, H, W]`` in pixels; grouping them into instances runs in Python
        (:meth:`evaluation_input`)."""
        return Meaning(
            "offsets (dx, dy) in pixels from each pixel to the centroid of its instance",
            unit="px",
            channels=("dx", "dy"),
            digits=1,
        )

    def metrics(self) -> Metric:
        """Offset error; with ``instance_classes`` also mask AP of the grouped instances."""
        if self.instance_classes is None:
            return OffsetErrorMetric()
        return InstanceSegmentationMetrics(self.instance_classes, self._grouping_config)

    def visualize(self, value: torch.Tensor) -> np.ndarray:
        """An offset field ``[2, H, W]`` or an id map ``[H, W]`` as an RGB image.

        Offsets (Kendall et al., CVPR 2018, Fig. 3): hue = direction, brightness = length relative
        to the longest vector of the image. Ids: one fixed colour per id, 0 black. An
        :class:`InstancePrediction` of one image: its offsets and its grouped instances side by
        side.
        """
        if isinstance(value, InstancePrediction):
            ids = self.group(value.cpu()[None])[0]
            return np.concatenate([self.visualize(value.offsets), self.visualize(ids)], axis=1)
        array = value.detach().cpu()
        if array.ndim == 3 and array.shape[0] == 2:
            dx, dy = array.double().numpy()
            hue = (np.arctan2(dy, dx) / (2 * np.pi)) % 1.0
            length = np.hypot(dx, dy)
            brightness = length / max(float(length.max()), 1e-12)
            hsv = np.stack([hue, np.ones_like(hue), brightness], axis=-1)
            return (hsv_to_rgb(hsv) * 255.0).round().astype(np.uint8)
        if array.ndim == 2 and not array.is_floating_point():
            ids, inverse = np.unique(array.long().numpy(), return_inverse=True)
            return _id_colours(ids)[inverse.reshape(array.shape)]
        raise ValueError(
            f"{self.name} visualize expects offsets [2, H, W] or ids [H, W], "
            f"got {array.dtype} {tuple(array.shape)}"
        )

    def from_composite(self, composite: torch.Tensor) -> torch.Tensor:
        """The first two composite channels, times ``composite_scale`` pixels."""
        return composite[:, :2] * self.composite_scale

    def to_composite(self, label: torch.Tensor) -> torch.Tensor:
        """``(dx, dy) / composite_scale`` and a zero third channel, so that
        ``from_composite(to_composite(ids))`` equals :func:`centroid_offsets`."""
        offsets, _ = centroid_offsets(label)
        return torch.cat([offsets / self.composite_scale, torch.zeros_like(offsets[:, :1])], 1)


def _id_colours(ids: np.ndarray) -> np.ndarray:
    """A fixed bright ``uint8`` colour per instance id (golden-ratio hue steps); 0 is black."""
    hue = (ids.astype(np.float64) * GOLDEN_RATIO_CONJUGATE) % 1.0
    hsv = np.stack([hue, np.full_like(hue, 0.7), (ids > 0).astype(np.float64)], axis=-1)
    return (hsv_to_rgb(hsv) * 255.0).round().astype(np.uint8)


__all__ = ["InstanceOffsets"]
