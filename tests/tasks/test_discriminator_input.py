"""Task.discriminator_input: what the domain discriminators see (Lopes et al., Supp. B.3)."""

import math

import pytest
import torch

from densetasks.errors import ConfigError, DataError
from densetasks.tasks.registry import create_task


def test_segmentation_map_is_the_normalised_weighted_self_information():
    task = create_task("semseg", num_classes=3)
    logits = torch.log(torch.tensor([0.5, 0.25, 0.25])).view(1, 3, 1, 1)
    mapped = task.discriminator_input(logits, None)
    expected = torch.tensor([0.5 * math.log(2), 0.25 * math.log(4), 0.25 * math.log(4)])
    assert torch.allclose(mapped.view(3), expected / math.log(3), atol=1e-6)


def test_segmentation_entropy_is_in_zero_one_and_one_when_uniform():
    task = create_task("semseg", num_classes=5)
    mapped = task.discriminator_input(torch.randn(2, 5, 4, 6) * 10, None)
    entropy = mapped.sum(dim=1)
    assert (mapped >= 0).all() and (entropy >= 0).all() and (entropy <= 1 + 1e-6).all()
    uniform = task.discriminator_input(torch.zeros(1, 5, 2, 2), None).sum(dim=1)
    assert torch.allclose(uniform, torch.ones_like(uniform))
    certain = torch.full((1, 5, 1, 1), -50.0)
    certain[:, 2] = 50.0
    assert task.discriminator_input(certain, None).sum() == pytest.approx(0.0, abs=1e-6)


def test_depth_map_is_relu_then_min_max_of_the_source_head_targets():
    task = create_task("depth", loss="berhu", far=20.0)
    # source depths 2, 4, 10 m and one unlabelled pixel -> head targets 10, 5, 2
    source = torch.tensor([[[[2.0, 4.0], [10.0, 0.0]]]])
    output = torch.tensor([[[[-1.0, 2.0], [6.0, 14.0]]]])
    mapped = task.discriminator_input(output, source)
    # ReLU -> [0, 2, 6, 14]; (x - 2) / (10 - 2); values above the source range stay above 1
    expected = torch.tensor([[[[-0.25, 0.0], [0.5, 1.5]]]])
    assert torch.allclose(mapped, expected)


def test_depth_range_carries_no_gradient_and_needs_a_source_label():
    task = create_task("depth", loss="berhu", far=20.0)
    output = (torch.rand(1, 1, 2, 2) + 0.1).requires_grad_()
    source = torch.tensor([[[[2.0, 4.0], [2.0, 4.0]]]])  # head targets 10 and 5: span 5
    task.discriminator_input(output, source).sum().backward()
    assert torch.allclose(output.grad, torch.full_like(output, 1 / 5))
    with pytest.raises(DataError, match="no depth label"):
        task.discriminator_input(output, None)
    with pytest.raises(DataError, match="no valid depth"):
        task.discriminator_input(output, torch.zeros(1, 1, 2, 2))


def test_normals_map_is_unit_vectors():
    task = create_task("normals")
    output = torch.tensor([3.0, 0.0, 4.0]).view(1, 3, 1, 1)
    mapped = task.discriminator_input(output, None).view(3)
    assert torch.allclose(mapped, torch.tensor([0.6, 0.0, 0.8]))


def test_a_task_without_a_map_is_not_adaptable_and_says_so():
    assert create_task("semseg", num_classes=2).adaptable
    assert create_task("depth").adaptable and create_task("normals").adaptable
    edges = create_task("edges")
    assert not edges.adaptable
    with pytest.raises(ConfigError, match="'edges' has no discriminator input"):
        edges.discriminator_input(torch.zeros(1, 1, 2, 2), None)
