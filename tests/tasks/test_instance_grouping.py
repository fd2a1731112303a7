"""The task side of instance grouping: drawing grouped ids, and the grouping API re-exported
where the docs and benchmarks import it (the grouping itself is tested in tests/metrics)."""

import numpy as np
import pytest
import torch

import densetasks.data.derive
import densetasks.metrics.instance_grouping
import densetasks.metrics.instance_segmentation
from densetasks.tasks import instance, instance_grouping


def test_draw_instances_is_stable_and_background_black() -> None:
    ids = torch.tensor([[0, 1, 2], [2, 1, 0]])
    image = instance_grouping.draw_instances(ids)
    assert image.shape == (2, 3, 3) and image.dtype == np.uint8
    assert (image[0, 0] == 0).all() and (image[0, 1] == image[1, 1]).all()
    assert (image[0, 1] != image[0, 2]).any()
    assert np.array_equal(image, instance_grouping.draw_instances(ids.clone()))
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        instance_grouping.draw_instances(torch.zeros(1, 2, 2, dtype=torch.int64))


@pytest.mark.parametrize(
    ("module", "owner", "name"),
    [
        (instance_grouping, densetasks.metrics.instance_grouping, "GroupingConfig"),
        (instance_grouping, densetasks.metrics.instance_grouping, "group_instances"),
        (instance_grouping, densetasks.metrics.instance_grouping, "group_instances_batch"),
        (instance, densetasks.data.derive, "centroid_offsets"),
        (instance, densetasks.metrics.instance_segmentation, "InstancePrediction"),
    ],
)
def test_moved_names_stay_importable_from_the_task_modules(module, owner, name):
    assert getattr(module, name) is getattr(owner, name)
    assert name in module.__all__
