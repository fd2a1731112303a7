import math

import pytest
import torch

from densetasks.data.sample import LabelKind
from densetasks.tasks.base import Likelihood
from densetasks.tasks.parts import HumanParts
from densetasks.tasks.semseg import SemanticSegmentation


def test_parts_is_its_own_task_with_semseg_behaviour():
    task = HumanParts(num_classes=7, focal_gamma=2.0)
    assert task.name == "parts" and SemanticSegmentation.name == "semseg"
    assert task.label_kind is LabelKind.MASK
    assert task.likelihood is Likelihood.CLASSIFICATION
    assert task.primary_metric == "miou" and task.channels == 7
    assert HumanParts(**task.options()).options() == task.options()
    assert repr(task).startswith("HumanParts(")


def test_parts_focal_loss_by_hand():
    task = HumanParts(num_classes=2, focal_gamma=2.0)
    output = torch.zeros(1, 2, 1, 1)
    output[0, 1] = math.log(3.0)  # p(class 1) = 3/4
    label = torch.ones(1, 1, 1, dtype=torch.int64)
    assert task.loss(output, label).item() == pytest.approx(0.25**2 * -math.log(0.75), rel=1e-6)
