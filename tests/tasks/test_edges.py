"""Edges task: weighted BCE by hand, masks, gradients, decode, drawing, composite round trip."""

import math

import numpy as np
import pytest
import torch

from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import ConfigError, DataError
from densetasks.metrics.boundary import BoundaryMetrics
from densetasks.tasks.edges import IGNORE_COLOUR, Edges


def bce(logit: float, positive: bool) -> float:
    probability = 1.0 / (1.0 + math.exp(-logit))
    return -math.log(probability if positive else 1.0 - probability)


def test_weighted_bce_by_hand_with_ignore_and_palette_mask():
    output = torch.tensor([[[[2.0, -1.0], [0.5, 3.0]]]])
    label = torch.tensor([[[1, 0], [IGNORE_INDEX, 0]]], dtype=torch.uint8)
    mask = torch.tensor([[[True, True], [True, False]]])
    expected = (0.95 * bce(2.0, True) + 0.05 * bce(-1.0, False)) / 2
    assert Edges().loss(output, label, mask).item() == pytest.approx(expected, rel=1e-6)
    custom = Edges(pos_weight=0.5, neg_weight=0.5).loss(output, label)
    expected = 0.5 * (bce(2.0, True) + bce(-1.0, False) + bce(3.0, False)) / 3
    assert custom.item() == pytest.approx(expected, rel=1e-6)


def test_gradients_flow_and_empty_batch_gives_zero_with_graph():
    output = torch.randn(2, 1, 8, 8, requires_grad=True)
    label = (torch.rand(2, 8, 8) > 0.8).to(torch.uint8)
    Edges().loss(output, label).backward()
    assert output.grad is not None and output.grad.abs().sum() > 0
    empty = torch.full((2, 8, 8), IGNORE_INDEX, dtype=torch.uint8)
    loss = Edges().loss(output, empty)
    assert loss.item() == 0.0 and loss.requires_grad


def test_wrong_output_shape_names_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 2, 8, 8\)"):
        Edges().loss(torch.zeros(2, 2, 8, 8), torch.zeros(2, 8, 8, dtype=torch.uint8))


def test_label_values_other_than_binary_are_data_errors():
    with pytest.raises(DataError, match="found 3"):
        Edges().loss(torch.zeros(1, 1, 2, 2), torch.tensor([[[0, 3], [1, 0]]], dtype=torch.uint8))


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="pos_weight"):
        Edges(pos_weight=-1.0)
    with pytest.raises(ConfigError, match="thresholds"):
        Edges(thresholds=0)
    with pytest.raises(ConfigError, match="max_dist"):
        Edges(max_dist="kitti")


@pytest.mark.parametrize(("preset", "tolerance"), [("bsds", 0.0075), ("nyud", 0.011)])
def test_tolerance_presets_reach_the_metric_and_are_recorded_by_name(preset, tolerance):
    task = Edges(max_dist=preset)
    assert task.metrics().max_dist == tolerance
    assert task.options()["max_dist"] == preset


def test_decode_is_probability_in_label_layout_and_metrics_are_fresh():
    task = Edges(thresholds=9)
    prob = task.decode(torch.zeros(3, 1, 5, 7))
    assert prob.shape == (3, 5, 7) and torch.allclose(prob, torch.full_like(prob, 0.5))
    first, second = task.metrics(), task.metrics()
    assert isinstance(first, BoundaryMetrics) and first is not second
    assert len(first.thresholds) == 9
    assert task.options() == {
        "pos_weight": 0.95,
        "neg_weight": 0.05,
        "thresholds": 9,
        "max_dist": 0.0075,
        "nms": True,
    }


def test_visualize_grey_levels_and_ignore_colour():
    task = Edges()
    label = torch.tensor([[0, 1, IGNORE_INDEX]], dtype=torch.uint8)
    image = task.visualize(label)
    assert image.dtype == np.uint8 and image.shape == (1, 3, 3)
    assert image[0, 0].tolist() == [0, 0, 0] and image[0, 1].tolist() == [255, 255, 255]
    assert image[0, 2].tolist() == IGNORE_COLOUR.tolist()
    assert task.visualize(torch.tensor([[0.5]]))[0, 0].tolist() == [128, 128, 128]


def test_composite_round_trip():
    task = Edges()
    label = torch.tensor([[[1, 0], [IGNORE_INDEX, 1]]], dtype=torch.uint8)
    composite = task.to_composite(label)
    assert composite.shape == (1, 3, 2, 2)
    assert composite[0, :, 1, 0].tolist() == [0.0, 0.0, 0.0]
    decoded = task.decode(task.from_composite(composite))
    valid = label != IGNORE_INDEX
    assert torch.equal((decoded[valid] > 0.5), label[valid] == 1)
    mean = task.from_composite(torch.tensor([[[[1.0]], [[2.0]], [[6.0]]]]))
    assert mean.shape == (1, 1, 1, 1) and mean.item() == pytest.approx(3.0)
