"""Dataset-level segmentation metrics from one confusion matrix (mIoU, pixel accuracy).

The confusion matrix is summed over the whole evaluation set and mIoU is computed once from
it, as papers report it (torchvision ``references/segmentation/utils.py``, detectron2
``SemSegEvaluator``), never as a mean of per-image IoUs (torchmetrics ``MeanIoU``).
"""

from typing import ClassVar

import torch

from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import DataError
from densetasks.metrics.base import Metric


class ConfusionMatrixMetric(Metric):
    """mIoU and pixel accuracy, in percent, over every labelled pixel seen since ``reset``.

    State ``confusion`` is int64 ``[K, K]``: rows are target classes, columns predictions.
    ``miou`` averages the IoU of the classes that occur in the target *or* the prediction
    anywhere in the set; a class absent from both has an undefined IoU (0/0) and is left out
    rather than counted as 0 or 1. A class predicted but never labelled has IoU 0 and counts.
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"miou": True, "pixel_acc": True}
    units: ClassVar[dict[str, str]] = {"miou": "%", "pixel_acc": "%"}

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.add_state("confusion", torch.zeros((num_classes, num_classes), dtype=torch.int64))

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add class ids ``pred`` and labels ``target`` (int ``[B, H, W]``; 255 ignored)."""
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} != label shape {tuple(target.shape)}"
            )
        valid = target != IGNORE_INDEX
        target = target[valid].long().cpu()
        pred = pred[valid].long().cpu()
        classes = self.num_classes
        if target.numel() and (target.min() < 0 or target.max() >= classes):
            raise DataError(
                f"label has class ids outside [0, {classes}) (found {target.min()}..{target.max()})"
            )
        if pred.numel() and (pred.min() < 0 or pred.max() >= classes):
            raise ValueError(f"prediction has class ids outside [0, {classes})")
        counts = torch.bincount(target * classes + pred, minlength=classes * classes)
        self.set_state("confusion", self.confusion + counts.reshape(classes, classes))

    def per_class_iou(self) -> torch.Tensor:
        """IoU of every class in percent, float64 ``[K]``; NaN for classes absent from both."""
        confusion = self.confusion.double()
        hits = confusion.diagonal()
        union = confusion.sum(0) + confusion.sum(1) - hits
        return torch.where(union > 0, 100.0 * hits / union.clamp(min=1), torch.nan)

    def compute(self) -> dict[str, float]:
        """``miou`` and ``pixel_acc`` in percent; NaN for both before any labelled pixel."""
        total = self.confusion.sum()
        if total == 0:
            return {"miou": float("nan"), "pixel_acc": float("nan")}
        iou = self.per_class_iou()
        return {
            "miou": float(iou[~iou.isnan()].mean()),
            "pixel_acc": float(100.0 * self.confusion.diagonal().sum().double() / total),
        }
