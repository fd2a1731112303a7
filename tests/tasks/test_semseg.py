import math

import numpy as np
import pytest
import torch

from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import ConfigError, DataError
from densetasks.metrics.segmentation import ConfusionMatrixMetric
from densetasks.pictures import ClassLegend
from densetasks.tasks.semseg import SemanticSegmentation


def tiny_example():
    """1×2×2 image, 2 classes; logits chosen so softmax probabilities are easy by hand."""
    output = torch.zeros(1, 2, 2, 2)
    output[0, 0, 0, 0] = math.log(3.0)  # p(class 0) = 3/4 at (0,0)
    output[0, 1, 0, 1] = math.log(3.0)  # p(class 1) = 3/4 at (0,1)
    label = torch.tensor([[[0, 0], [1, IGNORE_INDEX]]])
    return output, label


def test_cross_entropy_by_hand_ignores_255():
    output, label = tiny_example()
    task = SemanticSegmentation(num_classes=2)
    # pixels: (0,0) p=3/4, (0,1) p(class 0)=1/4, (1,0) p=1/2, (1,1) ignored
    expected = -(math.log(0.75) + math.log(0.25) + math.log(0.5)) / 3
    assert task.loss(output, label).item() == pytest.approx(expected, rel=1e-6)


def test_focal_loss_by_hand():
    output, label = tiny_example()
    task = SemanticSegmentation(num_classes=2, focal_gamma=2.0)
    terms = [(1 - p) ** 2 * -math.log(p) for p in (0.75, 0.25, 0.5)]
    assert task.loss(output, label).item() == pytest.approx(sum(terms) / 3, rel=1e-6)


def test_palette_mask_restricts_pixels():
    output, label = tiny_example()
    task = SemanticSegmentation(num_classes=2)
    mask = torch.tensor([[[False, True], [False, True]]])
    assert task.loss(output, label, mask).item() == pytest.approx(-math.log(0.25), rel=1e-6)


def test_no_valid_pixel_gives_zero_loss_with_graph():
    task = SemanticSegmentation(num_classes=3)
    output = torch.randn(2, 3, 4, 4, requires_grad=True)
    label = torch.full((2, 4, 4), IGNORE_INDEX)
    loss = task.loss(output, label)
    loss.backward()
    assert loss.item() == 0.0
    assert output.grad is not None and output.grad.abs().sum() == 0


def test_gradients_flow():
    task = SemanticSegmentation(num_classes=3, focal_gamma=2.0)
    output = torch.randn(2, 3, 8, 8, requires_grad=True)
    task.loss(output, torch.randint(0, 3, (2, 8, 8))).backward()
    assert torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0


def test_bad_inputs_are_named():
    task = SemanticSegmentation(num_classes=2)
    with pytest.raises(DataError, match="class ids"):
        task.loss(torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2), 7))
    with pytest.raises(ValueError, match="expected"):
        task.loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.int64))
    with pytest.raises(ConfigError, match="class_names"):
        SemanticSegmentation(num_classes=2, class_names=["a"])
    with pytest.raises(ConfigError, match="num_classes"):
        SemanticSegmentation(num_classes=0)


def test_decode_metrics_and_options():
    task = SemanticSegmentation(num_classes=4, class_names=list("abcd"), focal_gamma=2.0)
    prediction = task.decode(torch.randn(2, 4, 5, 6))
    assert prediction.shape == (2, 5, 6) and prediction.dtype == torch.int64
    assert isinstance(task.metrics(), ConfusionMatrixMetric)
    assert task.primary_metric in task.metrics().higher_is_better
    assert SemanticSegmentation(**task.options()).options() == task.options()
    assert task.channels == 4


def test_visualize_palette_and_ignore_black():
    task = SemanticSegmentation(num_classes=3)
    label = torch.tensor([[0, 1], [2, IGNORE_INDEX]])
    image = task.visualize(label)
    assert image.shape == (2, 2, 3) and image.dtype == np.uint8
    assert (image[1, 1] == 0).all()
    assert (image[0, 0] == task.colours[0]).all() and (image[1, 0] == task.colours[2]).all()
    assert image[0, 0].any()  # class 0 is not black


def test_the_key_is_a_legend_of_the_named_classes_present_and_the_meaning_names_every_id():
    named = SemanticSegmentation(num_classes=3, class_names=["floor", "wall", "person"])
    ids = torch.tensor([[2, 0], [255, 2]])  # 255: ignored, not a class
    legend = named.picture_key(ids)
    assert isinstance(legend, ClassLegend) and legend.names == ("floor", "wall", "person")
    np.testing.assert_array_equal(legend.colours, named.colours)
    assert legend.entries == [
        ("floor", tuple(named.colours[0])),
        ("person", tuple(named.colours[2])),
    ]
    inside = torch.tensor([[True, False], [True, False]])
    assert named.picture_key(ids, inside).shown == (2,)
    assert named.picture_key(ids, ~inside).shown == (0, 2)
    assert named.picture_key(ids, ids == 255) is None  # no class present: no legend
    assert named.meaning().classes == ("floor", "wall", "person")
    assert named.meaning().colours == tuple(tuple(int(c) for c in row) for row in named.colours)
    unnamed = SemanticSegmentation(num_classes=3)
    assert unnamed.picture_key(torch.zeros(2, 2, dtype=torch.int64)) is None
    assert unnamed.meaning().classes == ("class 0", "class 1", "class 2")
    assert unnamed.meaning().value_range == (0, 2)


@pytest.mark.parametrize("num_classes", [2, 21, 59])
def test_composite_round_trip(num_classes):
    task = SemanticSegmentation(num_classes=num_classes)
    label = torch.randint(0, num_classes, (2, 6, 7))
    label[0, 0, 0] = IGNORE_INDEX
    composite = task.to_composite(label)
    assert composite.shape == (2, 3, 6, 7)
    assert (composite[0, :, 0, 0] == 0).all()
    logits = task.from_composite(composite)
    assert logits.shape == (2, num_classes, 6, 7)
    decoded = task.decode(logits)
    valid = label != IGNORE_INDEX
    assert torch.equal(decoded[valid], label[valid])


def test_quasi_logits_decode_to_the_nearest_anchor():
    """Popovic et al., CVPR 2021, Sec. 3.3: the predicted class of a composite output is the
    class whose anchor is nearest to sigmoid(o), computed here independently in NumPy."""
    task = SemanticSegmentation(num_classes=6)
    composite = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(0)) * 3
    predicted = task.decode(task.from_composite(composite)).numpy()
    points = 1 / (1 + np.exp(-composite.numpy()))  # [B, 3, H, W]
    anchors = task.anchors.numpy()  # [K, 3]
    distances = np.linalg.norm(points[:, None] - anchors[None, :, :, None, None], axis=2)
    np.testing.assert_array_equal(predicted, distances.argmin(axis=1))
