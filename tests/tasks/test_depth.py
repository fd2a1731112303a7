import matplotlib
import numpy as np
import pytest
import torch

from densetasks.errors import ConfigError
from densetasks.metrics.depth import DepthMetrics
from densetasks.pictures import ColourBar, joint_key
from densetasks.tasks.depth import Depth

LOSSES = ["l1_inverse", "berhu", "ssi"]


def test_l1_inverse_by_hand():
    label = torch.tensor([[[[2.0, 4.0], [0.0, 1.0]]]])  # inverse: 0.5, 0.25, -, 1
    output = torch.tensor([[[[0.5, 0.5], [9.0, 0.0]]]])  # errors 0, 0.25, ignored, 1
    assert Depth().loss(output, label).item() == pytest.approx(1.25 / 3)


def test_berhu_by_hand_threshold_from_valid_pixels_only():
    task = Depth(loss="berhu", far=10.0)
    label = torch.tensor([[[[10.0, 5.0], [2.0, 0.0]]]])  # targets d_far/d: 1, 2, 5, -
    output = torch.tensor([[[[1.0, 2.5], [2.0, 70.0]]]])  # errors 0, 0.5, -3; ignored 70
    # c = 0.2 * 3 = 0.6: |0.5| <= c stays L1, |-3| > c gives (9 + 0.36) / 1.2
    expected = (0.0 + 0.5 + (9.0 + 0.36) / 1.2) / 3
    assert task.loss(output, label).item() == pytest.approx(expected, rel=1e-6)


def test_ssi_is_zero_for_affine_disparity_and_keeps_depth_term():
    generator = torch.Generator().manual_seed(1)
    label = 1.0 + 9.0 * torch.rand(2, 1, 6, 6, generator=generator)
    label[0, 0, :2] = 0.0
    disparity = torch.where(label > 0, 1.0 / label.clamp(min=1e-6), 0.0)
    output = 3.0 * disparity + 2.0
    invariant_only = Depth(loss="ssi", ssi_depth_weight=0.0).loss(output, label)
    assert invariant_only.item() == pytest.approx(0.0, abs=1e-5)
    weighted = Depth(loss="ssi", ssi_depth_weight=0.25).loss(output, label)
    l1 = Depth(loss="l1_inverse").loss(output, label)
    assert weighted.item() == pytest.approx(0.25 * l1.item(), rel=1e-4)


def test_ssi_penalises_non_affine_prediction():
    label = torch.tensor([[[[1.0, 2.0], [4.0, 8.0]]]])
    output = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    assert Depth(loss="ssi", ssi_depth_weight=0.0).loss(output, label).item() > 0.1


@pytest.mark.parametrize("loss", LOSSES)
def test_mask_gradients_and_empty_batches(loss):
    task = Depth(loss=loss)
    label = 1.0 + 5.0 * torch.rand(2, 1, 5, 5)
    output = torch.rand(2, 1, 5, 5, requires_grad=True)
    mask = torch.zeros(2, 5, 5, dtype=torch.bool)
    mask[:, :2] = True
    task.loss(output, label, mask).backward()
    assert torch.isfinite(output.grad).all()
    assert output.grad[:, :, :2].abs().sum() > 0 and output.grad[:, :, 2:].abs().sum() == 0
    empty = output.detach().clone().requires_grad_(True)
    zero = task.loss(empty, torch.zeros_like(label))
    zero.backward()
    assert zero.item() == 0.0 and empty.grad is not None


@pytest.mark.parametrize("loss", LOSSES)
def test_decode_and_composite_round_trip(loss):
    task = Depth(loss=loss, far=50.0)
    label = 0.5 + 20.0 * torch.rand(2, 1, 4, 5)
    label[1, 0, 0, 0] = 0.0
    composite = task.to_composite(label)
    assert composite.shape == (2, 3, 4, 5) and composite[1, :, 0, 0].eq(0).all()
    depth = task.decode(task.from_composite(composite))
    valid = label > 0
    assert torch.allclose(depth[valid], label[valid], rtol=1e-5)
    decoded = task.decode(torch.tensor([[[[-1.0, 0.0]]]]))
    assert decoded.shape == (1, 1, 1, 2) and torch.isfinite(decoded).all() and (decoded > 0).all()


def test_metrics_align_only_for_ssi_and_options_rebuild():
    assert Depth(loss="ssi").metrics().align_scale_shift
    assert not Depth(loss="berhu").metrics().align_scale_shift
    task = Depth(loss="berhu", far=40.0, ssi_depth_weight=0.5)
    assert Depth(**task.options()).options() == task.options()
    assert isinstance(task.metrics(), DepthMetrics) and task.channels == 1
    with pytest.raises(ConfigError, match="depth.loss"):
        Depth(loss="l2")
    with pytest.raises(ValueError, match="B, 1, H, W"):
        task.loss(torch.zeros(1, 2, 3, 3), torch.ones(1, 1, 3, 3))


def test_visualize_colours_and_black_invalid():
    task = Depth()
    label = torch.tensor([[[1.0, 2.0], [4.0, 0.0]]])
    image = task.visualize(label)
    assert image.shape == (2, 2, 3) and image.dtype == np.uint8
    assert (image[1, 1] == 0).all()
    # near (1 m) is the brightest end of magma, far (4 m) the darkest
    assert image[0, 0].sum() > image[0, 1].sum() > image[1, 0].sum()
    assert task.visualize(torch.zeros(1, 3, 3)).sum() == 0


def test_the_picture_is_magma_of_min_max_inverse_depth_by_hand():
    """1, 2 and 4 m: inverse depths 1, 1/2, 1/4, min-max normalised to 1, 1/3 and 0."""
    image = Depth().visualize(torch.tensor([[[1.0, 2.0, 4.0]]]))
    magma = matplotlib.colormaps["magma"]([1.0, 1 / 3, 0.0])[:, :3]
    np.testing.assert_array_equal(image[0], np.round(magma * 255).astype(np.uint8))


def test_the_key_is_the_colour_bar_of_the_depths_shown_and_paints_the_picture():
    depth = torch.tensor([[[0.0, 1.25], [3.5, 2.0]]])  # 0: unlabelled, left out of the range
    key = Depth().picture_key(depth)
    assert key == ColourBar("magma", 1.25, 3.5, "m", inverse=True)
    assert key.labels() == ("1.25 m", "3.5 m")
    labelled = depth[0] > 0
    np.testing.assert_array_equal(
        Depth().visualize(depth)[labelled.numpy()], key.colours(depth[0][labelled].double())
    )
    inside = torch.tensor([[True, True], [False, True]])
    assert Depth().picture_key(depth, inside).labels() == ("1.25 m", "2 m")
    assert Depth().picture_key(torch.zeros(1, 2, 2)) is None  # no depth: no bar, words
    assert "bright = near" in Depth.picture_colours


def test_a_wider_key_paints_a_label_and_its_prediction_alike():
    """The joint bar of a label (1-2 m) and a prediction (2-4 m) spans 1-4 m: both pictures
    give 2 m the same colour, the one that bar gives it, and unlabelled pixels stay black."""
    label = torch.tensor([[[1.0, 2.0, 0.0]]])
    prediction = torch.tensor([[[2.0, 4.0, 3.0]]])
    task = Depth()
    key = joint_key(task.picture_key(label), task.picture_key(prediction))
    assert key == ColourBar("magma", 1.0, 4.0, "m", inverse=True)
    painted_label = task.visualize_with(label, key)
    painted_prediction = task.visualize_with(prediction, key)
    np.testing.assert_array_equal(painted_label[0, 1], painted_prediction[0, 0])
    np.testing.assert_array_equal(painted_label[0, 1], key.colours(np.array([2.0]))[0])
    assert not painted_label[0, 2].any()
    assert not np.array_equal(painted_label[0, 1], task.visualize(label)[0, 1])  # own range


def test_the_meaning_is_metres_up_to_far_or_the_ssi_disparity():
    output = torch.tensor([[[[0.5, -0.1]]]])
    meaning = Depth(far=50.0).meaning()
    assert (meaning.unit, meaning.channels, meaning.value_range) == ("m", ("depth",), (0.0, 50.0))
    task = Depth(far=50.0)
    torch.testing.assert_close(task.prediction_values(output), task.decode(output))
    ssi = Depth(loss="ssi")
    assert "up to a per-image scale and shift" in ssi.meaning().text
    assert ssi.meaning().unit == ""
    assert torch.equal(ssi.prediction_values(output), output)  # no absolute depth to decode


@pytest.mark.parametrize("loss", LOSSES)
def test_max_depth_leaves_far_labels_out_of_the_loss(loss):
    task, near = Depth(loss=loss, max_depth=80.0), Depth(loss=loss)
    output = torch.rand(1, 1, 2, 3, generator=torch.Generator().manual_seed(0)) + 0.1
    label = torch.tensor([[[[2.0, 5.0, 1e5], [80.0, 0.0, 3.0]]]])
    near_only = torch.where(label > 80.0, 0.0, label)
    assert task.loss(output, label).item() == pytest.approx(near.loss(output, near_only).item())
    assert task.valid(label).tolist() == [[[True, True, False], [True, False, True]]]
    mask = torch.tensor([[[False, True, True], [True, True, True]]])
    assert task.valid(label, mask).tolist() == [[[False, True, False], [True, False, True]]]


def test_metrics_options_and_primary_metric_choice():
    task = Depth(max_depth=80.0, disparity_scale=59.2, primary_metric="disparity_mae")
    metric = task.metrics()
    assert (metric.max_depth, metric.disparity_scale) == (80.0, 59.2)
    assert task.primary_metric == "disparity_mae" and Depth.primary_metric == "rmse"
    assert Depth(**task.options()).primary_metric == "disparity_mae"
    assert Depth().primary_metric == "rmse" and Depth().options()["max_depth"] is None
    assert Depth(primary_metric="inverse_mae").primary_metric in Depth().metrics().names
    with pytest.raises(ConfigError, match="disparity_scale"):
        Depth(primary_metric="disparity_mae")
    with pytest.raises(ConfigError, match="depth.primary_metric"):
        Depth(primary_metric="rmse_log")
    with pytest.raises(ConfigError, match="depth.max_depth"):
        Depth(max_depth=0.0)
    with pytest.raises(ConfigError, match="depth.disparity_scale"):
        Depth(disparity_scale=-1.0)


def test_ssi_metrics_receive_the_raw_output_others_the_decoded_depth():
    output = torch.tensor([[[[-0.5, 0.25]]]])
    ssi, berhu = Depth(loss="ssi"), Depth(loss="berhu")
    assert ssi.metric_input(ssi.decode(output), output) is output
    decoded = berhu.decode(output)
    assert berhu.metric_input(decoded, output) is decoded
