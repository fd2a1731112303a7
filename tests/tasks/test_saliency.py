"""Saliency task: batch-balanced BCE from a known batch, masks, gradients, composite."""

import math

import pytest
import torch

from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import ConfigError
from densetasks.metrics.saliency import SALIENCY_PROTOCOLS, SaliencyMetrics
from densetasks.tasks.registry import create_task
from densetasks.tasks.saliency import Saliency


def sigmoid(logit: float) -> float:
    return 1.0 / (1.0 + math.exp(-logit))


def bce(logit: float, positive: bool) -> float:
    probability = sigmoid(logit)
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
    assert task.options() == {"protocol": "per_image_f1", "bce_per_channel": False}
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
    expected = {"protocol": protocol, "bce_per_channel": False}
    assert Saliency(**task.options()).options() == task.options() == expected


def test_unknown_protocol_is_a_config_error():
    with pytest.raises(ConfigError, match="saliency.protocol"):
        Saliency(protocol="per_image_f2")


def test_per_channel_bce_is_the_authors_balanced_bce_on_each_channel():
    """``bce_per_channel`` (the authors' ``BalancedBCELoss``): every channel of a selected,
    labelled pixel is an element; 3 channels × (1 positive + 2 negatives) = 3 positive and
    6 negative elements, counts + 1: ``w₊ = (6 + 1) / (9 + 2)``, ``w₋ = (3 + 1) / 11``; the
    ignored and the unselected pixels take no part."""
    logits = [[0.5, -1.0, 2.0, 3.0], [1.5, 0.0, -0.5, -3.0], [-2.0, 1.0, 0.25, 3.0]]
    output = torch.tensor(logits).reshape(1, 3, 1, 4)
    label = torch.tensor([[[1, 0, 0, IGNORE_INDEX]]], dtype=torch.uint8)
    mask = torch.ones(1, 1, 4, dtype=torch.bool)
    positive, negative = 7 / 11, 4 / 11
    expected = (
        sum(
            positive * bce(channel[0], True)
            + negative * (bce(channel[1], False) + bce(channel[2], False))
            for channel in logits
        )
        / 9
    )
    task = Saliency(bce_per_channel=True)
    assert task.loss(output, label, mask).item() == pytest.approx(expected, rel=1e-6)
    label[0, 0, 3] = 0  # now selected out by the mask instead of ignored: the same loss
    mask[0, 0, 3] = False
    assert task.loss(output, label, mask).item() == pytest.approx(expected, rel=1e-6)


def test_per_channel_bce_differs_from_the_mean_logit_and_trains_every_channel():
    """The default reads the channel mean (paper): the three channels of a pixel share one
    gradient. The option gives every channel its own: 3 positive and 3 negative elements,
    ``w₊ = w₋ = (3 + 1) / (6 + 2)``, ``∂L/∂x = w (σ(x) − y) / 6``."""
    logits = [[2.0, -0.5], [-1.0, 1.5], [0.5, 0.0]]
    composite = torch.tensor(logits).reshape(1, 3, 1, 2).requires_grad_()
    label = torch.tensor([[[1, 0]]], dtype=torch.uint8)
    mean_logit, per_channel = Saliency(), Saliency(bce_per_channel=True)
    assert mean_logit.from_composite(composite).shape == (1, 1, 1, 2)
    assert per_channel.from_composite(composite).shape == (1, 3, 1, 2)
    per_channel.loss(per_channel.from_composite(composite), label).backward()
    expected = [[0.5 * (sigmoid(x) - 1) / 6, 0.5 * sigmoid(z) / 6] for x, z in logits]
    assert composite.grad.reshape(3, 2).tolist() == [pytest.approx(row) for row in expected]
    composite.grad = None
    mean_logit.loss(mean_logit.from_composite(composite), label).backward()
    shared = composite.grad[0, :1].expand(3, -1, -1)
    assert torch.equal(composite.grad[0], shared) and shared.abs().min() > 0
    probabilities = torch.sigmoid(composite.detach()).mean(dim=1)
    assert torch.equal(per_channel.decode(per_channel.from_composite(composite)), probabilities)
    assert Saliency(**per_channel.options()).bce_per_channel


def test_per_channel_bce_trains_a_composite_network_end_to_end(run_end_to_end):
    """Through the engine: a CompositeTasking network whose saliency keeps its three
    channels trains, resumes bit for bit, is scored and predicts."""
    result = run_end_to_end(
        {
            "tasks": {"semseg": {}, "saliency": {"bce_per_channel": True}},
            "data": {
                "options": {"n_train": 4, "n_val": 2, "n_test": 2, "size": [32, 32]},
                "batch_size": 2,
            },
            "model": {
                "architecture": "composite_tasking",
                "encoder": "tiny",
                "output_stride": 32,
                "options": {"decoder_widths": [16, 16, 16, 16, 8]},
            },
        }
    )
    assert result["prediction"].outputs["saliency"].shape == (3, 40, 36)
    assert 0 <= result["test"]["metrics"]["saliency"]["maxIoU"] <= 100
