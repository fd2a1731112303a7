"""``densetasks.pictures``: the keys under a task's picture (class legend, depth colour bar)."""

import numpy as np
import torch

from densetasks.pictures import (
    KEY_MARGIN,
    KEY_ROW_HEIGHT,
    SWATCH,
    ClassLegend,
    DepthColourBar,
    keyed_picture,
    task_key,
)
from densetasks.tasks.depth import Depth
from densetasks.tasks.semseg import SemanticSegmentation

NAMES = ["floor", "wall", "person"]


def named_semseg() -> SemanticSegmentation:
    return SemanticSegmentation(num_classes=3, class_names=NAMES)


def test_the_legend_has_the_classes_in_order_with_their_colours() -> None:
    task = named_semseg()
    legend = task_key(task, torch.zeros(4, 4).long())
    assert isinstance(legend, ClassLegend) and legend.names == tuple(NAMES)
    np.testing.assert_array_equal(legend.colours, task.colours)
    picture = legend.draw(400)
    lefts = [
        np.flatnonzero((picture == colour).all(axis=2).any(axis=0))[0] for colour in task.colours
    ]
    assert lefts == sorted(lefts)  # swatches left to right in class-id order


def test_the_depth_bar_labels_are_the_min_and_max_shown_depth_in_metres() -> None:
    depth = torch.tensor([[[0.0, 1.25], [3.5, 2.0]]])  # 0: unlabelled, left out of the range
    assert task_key(Depth(), depth).labels() == ("1.25 m", "3.50 m")
    inside = torch.tensor([[True, True], [False, True]])
    assert task_key(Depth(), depth, inside).labels() == ("1.25 m", "2.00 m")
    assert task_key(Depth(), torch.zeros(1, 2, 2)) is None  # no depth: no bar


def test_a_task_without_class_names_has_no_key_and_its_picture_stays_as_it_is() -> None:
    task = SemanticSegmentation(num_classes=3)
    ids = torch.zeros(4, 4).long()
    assert task_key(task, ids) is None
    picture = task.visualize(ids)
    assert keyed_picture(task, picture, ids) is picture


def test_the_legend_sits_under_the_picture_at_its_width() -> None:
    task = named_semseg()
    ids = torch.arange(3).repeat(24, 80)  # [24, 240]
    picture = task.visualize(ids)
    keyed = keyed_picture(task, picture, ids)
    assert keyed.shape == (24 + KEY_ROW_HEIGHT + KEY_MARGIN, 240, 3)  # one row of classes
    np.testing.assert_array_equal(keyed[:24], picture)


def test_a_narrow_legend_wraps_into_more_rows() -> None:
    legend = ClassLegend(tuple(NAMES), named_semseg().colours)
    assert legend.draw(60).shape == (3 * KEY_ROW_HEIGHT + KEY_MARGIN, 60, 3)


def test_the_depth_bar_sits_under_the_depth_picture_at_its_width() -> None:
    depth = torch.linspace(0.5, 4.0, 16 * 80).reshape(1, 16, 80)
    picture = Depth().visualize(depth)
    keyed = keyed_picture(Depth(), picture, depth)
    assert keyed.shape == (16 + KEY_MARGIN + SWATCH + KEY_ROW_HEIGHT, 80, 3)
    np.testing.assert_array_equal(keyed[:16], picture)
    bar = DepthColourBar(0.5, 4.0).draw(80)
    np.testing.assert_array_equal(keyed[16:], bar)
