"""mIoU and pixel accuracy by hand; the comparison with a NumPy reference over batches,
resets and summed states is ``test_reference_harness.py``."""

import math

import pytest
import torch

from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import DataError
from densetasks.metrics.segmentation import ConfusionMatrixMetric


def test_miou_from_hand_computed_confusion_matrix():
    # 4 classes; class 3 never occurs in target nor prediction -> left out of the mean.
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 2, IGNORE_INDEX]]])
    pred = torch.tensor([[[0, 1, 1, 1], [2, 2, 0, 3]]])
    metric = ConfusionMatrixMetric(4)
    metric.update(pred, target)
    expected = torch.tensor([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]])
    assert torch.equal(metric.confusion, expected)
    # IoU: class 0: 1/(2+2-1)=1/3, class 1: 2/(2+3-2)=2/3, class 2: 2/(3+2-2)=2/3
    iou = metric.per_class_iou()
    assert iou[:3].tolist() == pytest.approx([100 / 3, 200 / 3, 200 / 3])
    assert math.isnan(iou[3])
    result = metric.compute()
    assert result["miou"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 2 / 3) / 3)
    assert result["pixel_acc"] == pytest.approx(100 * 5 / 7)


def test_predicted_but_unlabelled_class_counts_as_zero():
    metric = ConfusionMatrixMetric(2)
    metric.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 0]]]))
    assert metric.compute()["miou"] == pytest.approx((50.0 + 0.0) / 2)


def test_pixel_accuracy_is_divided_in_float64():
    # 1 of 3 pixels right: 100 / 3 exactly as Python divides; float32 gave 33.33333206.
    metric = ConfusionMatrixMetric(2)
    metric.update(torch.tensor([[[0, 0, 0]]]), torch.tensor([[[0, 1, 1]]]))
    assert metric.compute()["pixel_acc"] == 100 / 3


def test_bad_labels_and_shapes():
    metric = ConfusionMatrixMetric(3)
    with pytest.raises(DataError, match="class ids"):
        metric.update(torch.zeros(1, 1, 1, dtype=torch.int64), torch.full((1, 1, 1), 5))
    with pytest.raises(ValueError, match="shape"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.int64), torch.zeros(1, 2, 3))
