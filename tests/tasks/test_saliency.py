"""Saliency task: batch-balanced BCE from a known batch, masks, gradients, composite."""

import math

import pytest
import torch

from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import ConfigError
from densetasks.metrics.saliency import SALIENCY_PROTOCOLS, SaliencyMetrics
from densetasks.tasks.registry import create_task
from densetasks.tasks.saliency import Saliency


def bce(logit: float, positive: bool) -> float:
    probability = 1.0 / (1.0 + math.exp(-logit))
    return -math.log(probability if positive else 1.0 - probability)


def test_balanced_weights_from_a_known_batch():
    # 4 valid pixels: 1 positive, 3 negatives -> positive weight 3/4, negative weight 1/4.
    output = torch.tensor([[[[1.0, -2.0], [0.0, 0.5]]], [[[4.0, 0.0], [0.0, 0.0]]]])
    label = torch.tensor(
        [[[1, 0], [0, IGNORE_INDEX]], [[0, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX]]],
        dtype=torch.uint8,
    )
    weights = Saliency().class_weights(label == 1, label != IGNORE_INDEX)
    assert [float(w) for w in weights] == [0.75, 0.25]
    expected = (
        0.75 * bce(1.0, True) + 0.25 * (bce(-2.0, False) + bce(0.0, False) + bce(4.0, False))
    ) / 4
    assert Saliency().loss(output, label).item() == pytest.approx(expected, rel=1e-6)


def test_palette_mask_changes_the_batch_statistics():
    output = torch.tensor([[[[1.0, -1.0, 2.0]]]])
    label = torch.tensor([[[1, 0, 0]]], dtype=torch.uint8)
    mask = torch.tensor([[[True, True, False]]])
    expected = (0.5 * bce(1.0, True) + 0.5 * bce(-1.0, False)) / 2
    assert Saliency().loss(output, label, mask).item() == pytest.approx(expected, rel=1e-6)


def test_gradients_flow_and_empty_batch_gives_zero_with_graph():
    output = torch.randn(2, 1, 8, 8, requires_grad=True)
    label = (torch.rand(2, 8, 8) > 0.5).to(torch.uint8)
    Saliency().loss(output, label).backward()
    assert output.grad is not None and output.grad.abs().sum() > 0
    loss = Saliency().loss(output, label, torch.zeros(2, 8, 8, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad


def test_contract_members():
    task = Saliency()
    assert task.channels == 1 and task.primary_metric == "maxIoU"
    assert task.options() == {"protocol": "per_image_f1"}
    assert isinstance(task.metrics(), SaliencyMetrics)
    assert task.primary_metric in task.metrics().higher_is_better
    assert task.decode(torch.zeros(2, 1, 4, 4)).shape == (2, 4, 4)
    label = torch.tensor([[[1, 0]]], dtype=torch.uint8)
    assert torch.equal(task.decode(task.from_composite(task.to_composite(label))) > 0.5, label == 1)
    assert task.visualize(label[0]).shape == (1, 2, 3)


@pytest.mark.parametrize("protocol", SALIENCY_PROTOCOLS)
def test_protocol_option_reaches_the_metrics_and_rebuilds(protocol):
    task = create_task("saliency", protocol=protocol)
    metric = task.metrics()
    assert metric.protocol == protocol and metric is not task.metrics()
    assert Saliency(**task.options()).options() == task.options() == {"protocol": protocol}


def test_unknown_protocol_is_a_config_error():
    with pytest.raises(ConfigError, match="saliency.protocol"):
        Saliency(protocol="per_image_f2")
