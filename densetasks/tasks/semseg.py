"""Semantic segmentation: one class id per pixel, cross-entropy or focal loss, mIoU."""

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from densetasks.data.sample import IGNORE_INDEX, LabelKind
from densetasks.errors import ConfigError, DataError
from densetasks.metrics.segmentation import ConfusionMatrixMetric
from densetasks.pictures import ClassLegend
from densetasks.tasks._common import class_colours, masked_mean, quasi_logits
from densetasks.tasks.base import Likelihood, Meaning, Task

ANCHOR_CLAMP = 1e-4
"""Anchors are clamped to ``[ANCHOR_CLAMP, 1 - ANCHOR_CLAMP]`` before the inverse sigmoid in
:meth:`SemanticSegmentation.to_composite`, so colour components 0 and 1 map to finite values."""


class SemanticSegmentation(Task):
    """Per-pixel classification into ``num_classes`` classes (label kind MASK, 255 ignored).

    Loss: cross-entropy, or with ``focal_gamma > 0`` the focal loss ``(1 − p_t)^γ · (−log p_t)``
    (Lin et al. 2017; Popovic et al., CVPR 2021, Sec. 4, use γ = 2 for segmentation and human
    parts), averaged over the labelled, palette-selected pixels.
    """

    name = "semseg"
    label_kind = LabelKind.MASK
    likelihood = Likelihood.CLASSIFICATION
    primary_metric = "miou"
    picture_colours = "one colour per class"

    def __init__(
        self,
        *,
        num_classes: int,
        class_names: list[str] | None = None,
        focal_gamma: float = 0.0,
        composite_eps: float = 1e-8,
    ) -> None:
        if not 1 <= num_classes <= IGNORE_INDEX:
            raise ConfigError(
                f"{self.name}.num_classes must be in [1, {IGNORE_INDEX}], got {num_classes}"
            )
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(
                f"{self.name}.class_names has {len(class_names)} names for {num_classes} classes"
            )
        if focal_gamma < 0:
            raise ConfigError(f"{self.name}.focal_gamma must be >= 0, got {focal_gamma}")
        if composite_eps <= 0:
            raise ConfigError(f"{self.name}.composite_eps must be > 0, got {composite_eps}")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.focal_gamma = focal_gamma
        self.composite_eps = composite_eps
        self.colours = class_colours(num_classes)
        self.anchors = torch.from_numpy(self.colours).float() / 255.0
        """Composite-space class anchors ``[K, 3]`` in sigmoid range (Popovic et al., CVPR 2021,
        Sec. 3.3)."""

    @property
    def channels(self) -> int:
        return self.num_classes

    def loss(
        self, output: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean (focal) cross-entropy over the valid pixels of ``label`` within ``mask``."""
        valid = self.valid(label, mask)
        self.check_output(output, label)
        labelled = label[valid]
        if labelled.numel() and (labelled.min() < 0 or labelled.max() >= self.num_classes):
            raise DataError(
                f"{self.name} label has class ids outside [0, {self.num_classes}) "
                f"(found {labelled.min()}..{labelled.max()}) and not {IGNORE_INDEX}"
            )
        target = torch.where(valid, label, torch.zeros_like(label)).long()
        log_p_true = F.log_softmax(output, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
        per_pixel = -log_p_true
        if self.focal_gamma > 0:
            per_pixel = (1.0 - log_p_true.exp()).pow(self.focal_gamma) * per_pixel
        return masked_mean(per_pixel, valid)

    def discriminator_input(
        self, output: torch.Tensor, source_label: torch.Tensor | None
    ) -> torch.Tensor:
        """Weighted self-information ``−P ⊙ log P / log C`` of the softmax ``P`` (Lopes et
        al., WACV 2023, Supp. B.3, eq. 10, after AdvEnt, Vu et al., CVPR 2019), ``C``
        channels; the channels sum to the normalised entropy, in ``[0, 1]``. One class: 0."""
        entropy = torch.special.entr(F.softmax(output, dim=1))
        return entropy / math.log(self.num_classes) if self.num_classes > 1 else entropy

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """Class ids, int64 ``[B, H, W]``."""
        return output.argmax(dim=1)

    def metrics(self) -> ConfusionMatrixMetric:
        return ConfusionMatrixMetric(self.num_classes)

    def visualize(self, value: torch.Tensor) -> np.ndarray:
        """Class ids ``[H, W]`` -> palette colours; ignored (or unknown) ids are black."""
        if value.ndim != 2:
            raise ValueError(f"{self.name} visualize expects [H, W], got {tuple(value.shape)}")
        ids = value.detach().cpu().long().numpy()
        known = (ids >= 0) & (ids < self.num_classes)
        image = np.zeros((*ids.shape, 3), dtype=np.uint8)
        image[known] = self.colours[ids[known]]
        return image

    def picture_key(self, value: Any, mask: torch.Tensor | None = None) -> ClassLegend | None:
        """The legend of the classes present in ``value`` (inside ``mask``, when given), in
        id order, when the task has class names; ``None`` without names, where a legend
        would say nothing, and when no class is present."""
        if not self.class_names:
            return None
        ids = value.detach().cpu().long()
        if mask is not None:
            ids = ids[mask.cpu()]
        present = [i for i in torch.unique(ids).tolist() if 0 <= i < self.num_classes]
        if not present:
            return None
        return ClassLegend(tuple(self.class_names), self.colours, shown=tuple(present))

    def meaning(self) -> Meaning:
        """Class ids ``[B, H, W]``, named by ``class_names`` (``class <id>`` without), with
        the colours of the pictures."""
        names = self.class_names or [f"class {index}" for index in range(self.num_classes)]
        return Meaning(
            "class ids",
            classes=tuple(names),
            colours=tuple(tuple(int(c) for c in colour) for colour in self.colours),
            value_range=(0, self.num_classes - 1),
            digits=0,
        )

    def from_composite(self, composite: torch.Tensor) -> torch.Tensor:
        """Quasi-logits ``1 / (‖sigmoid(o) − a_k‖ + ε)`` over the class anchors (Popovic et al.,
        CVPR 2021)."""
        return quasi_logits(composite, self.anchors, self.composite_eps)

    def to_composite(self, label: torch.Tensor) -> torch.Tensor:
        """The raw composite output whose sigmoid is each pixel's class anchor; ignored -> 0.

        The inverse sigmoid makes ``decode(from_composite(to_composite(label)))`` return the
        label, since :meth:`from_composite` applies the sigmoid before measuring distances.
        """
        valid = self.valid(label)
        ids = torch.where(valid, label, torch.zeros_like(label)).long()
        anchors = self.anchors.to(label.device).clamp(ANCHOR_CLAMP, 1.0 - ANCHOR_CLAMP)
        points = torch.logit(anchors)[ids].permute(0, 3, 1, 2)  # [B, 3, H, W]
        return points * valid.unsqueeze(1)
