"""The task side of instance grouping: drawing grouped ids (the grouping itself is tested in
tests/metrics)."""

import numpy as np
import pytest
import torch

from densetasks.tasks import instance_grouping


def test_draw_instances_is_stable_and_background_black() -> None:
    ids = torch.tensor([[0, 1, 2], [2, 1, 0]])
    image = instance_grouping.draw_instances(ids)
    assert image.shape == (2, 3, 3) and image.dtype == np.uint8
    assert (image[0, 0] == 0).all() and (image[0, 1] == image[1, 1]).all()
    assert (image[0, 1] != image[0, 2]).any()
    assert np.array_equal(image, instance_grouping.draw_instances(ids.clone()))
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        instance_grouping.draw_instances(torch.zeros(1, 2, 2, dtype=torch.int64))
