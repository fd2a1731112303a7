"""Instance offsets: centroids by hand (fractional), L1 loss, masks, gradients, drawing."""

import numpy as np
import pytest
import torch

from densetasks.data.derive import centroid_offsets
from densetasks.errors import ConfigError
from densetasks.metrics.instance_ap import InstanceMap
from densetasks.metrics.offsets import OffsetErrorMetric
from densetasks.tasks.instance import InstanceOffsets
from densetasks.tasks.registry import label_kinds

# Instance 1: pixels (x, y) = (1, 0), (2, 0), (2, 1) -> centroid (5/3, 1/3).
# Instance 7: pixels (0, 1), (1, 1)                  -> centroid (0.5, 1).
IDS = torch.tensor([[[0, 1, 1], [7, 7, 1], [0, 0, 0]]])


def test_centroid_offsets_by_hand():
    offsets, instance = centroid_offsets(IDS)
    dx = torch.tensor([[0, 2 / 3, -1 / 3], [0.5, -0.5, -1 / 3], [0, 0, 0]])
    dy = torch.tensor([[0, 1 / 3, 1 / 3], [0, 0, -2 / 3], [0, 0, 0]])
    assert offsets.shape == (1, 2, 3, 3) and offsets.dtype == torch.float32
    assert torch.allclose(offsets[0, 0], dx) and torch.allclose(offsets[0, 1], dy)
    assert torch.equal(instance, IDS > 0)


def test_same_id_in_two_images_is_two_instances_and_offsets_sum_to_zero():
    ids = torch.stack([IDS[0], torch.ones(3, 3, dtype=torch.int64)])
    offsets, _ = centroid_offsets(ids)
    assert torch.allclose(offsets[0], centroid_offsets(IDS)[0][0])
    assert torch.allclose(offsets[1, 0, 1], torch.tensor([1.0, 0.0, -1.0]))
    random_ids = torch.randint(0, 5, (3, 16, 16)) * 1000
    offsets, _ = centroid_offsets(random_ids)
    for image in range(3):
        for instance_id in random_ids[image].unique():
            if instance_id > 0:
                pixels = random_ids[image] == instance_id
                assert offsets[image][:, pixels].sum(1).abs().max() < 1e-3


def test_l1_loss_by_hand_with_palette_mask():
    task = InstanceOffsets()
    output = torch.zeros(1, 2, 3, 3)
    target, _ = centroid_offsets(IDS)
    expected = target.abs().sum(1)[IDS > 0].mean()
    assert task.loss(output, IDS).item() == pytest.approx(expected.item(), rel=1e-6)
    mask = torch.zeros(1, 3, 3, dtype=torch.bool)
    mask[0, 1, 0] = True  # pixel (x 0, y 1): |0.5| + |0|
    assert task.loss(output, IDS, mask).item() == pytest.approx(0.5)
    assert task.loss(target.clone(), IDS).item() == pytest.approx(0.0, abs=1e-7)


def test_gradients_flow_and_no_instance_gives_zero_with_graph():
    task = InstanceOffsets()
    output = torch.randn(1, 2, 3, 3, requires_grad=True)
    task.loss(output, IDS).backward()
    assert output.grad is not None and output.grad[:, :, 2].abs().sum() == 0
    assert output.grad.abs().sum() > 0
    loss = task.loss(output, torch.zeros_like(IDS))
    assert loss.item() == 0.0 and loss.requires_grad


def test_contract_members_and_composite_round_trip():
    task = InstanceOffsets(composite_scale=4.0)
    assert task.channels == 2
    assert task.options() == {
        "composite_scale": 4.0,
        "instance_classes": None,
        "semantic_task": "semseg",
        "grouping": {},
    }
    assert isinstance(task.metrics(), OffsetErrorMetric)
    composite = task.to_composite(IDS)
    assert composite.shape == (1, 3, 3, 3) and composite[:, 2].abs().sum() == 0
    assert torch.allclose(task.from_composite(composite), centroid_offsets(IDS)[0])
    output = torch.randn(2, 2, 4, 4)
    assert task.decode(output) is output


def test_visualize_offsets_and_ids():
    task = InstanceOffsets()
    field = torch.zeros(2, 1, 3)
    field[0, 0, 0] = 2.0  # pointing right, longest -> red at full brightness
    field[1, 0, 1] = 1.0  # pointing down, half length
    image = task.visualize(field)
    assert image.shape == (1, 3, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [255, 0, 0]
    assert max(image[0, 1]) == 128 and image[0, 2].tolist() == [0, 0, 0]
    colours = task.visualize(IDS[0])
    assert colours[0, 0].tolist() == [0, 0, 0] and colours[0, 1].max() == 255
    assert colours[0, 1].tolist() == colours[1, 2].tolist() != colours[1, 0].tolist()
    with pytest.raises(ValueError, match="visualize"):
        task.visualize(torch.zeros(3, 4, 4))


def test_grouped_evaluation_scores_offsets_and_instance_masks() -> None:
    """With instance classes, evaluation groups the votes of the pixels the semantic task predicts
    as things (Kendall et al., CVPR 2018, Sec. 4): exact inputs give zero offset error and high
    per-class AP against the ids with the semantic label (``evaluation_target``); ids alone give
    the class-agnostic AP only; without a semantic prediction only the offset error is measured."""
    from densetasks.data import SyntheticScenes, collate_samples
    from densetasks.tasks import create_task
    from densetasks.tasks.base import evaluation_inputs

    scenes = SyntheticScenes(n=4, size=(64, 64), seed=1, persons=(1, 1))
    batch = collate_samples([scenes[index] for index in range(len(scenes))], label_kinds())
    tasks = {
        "semseg": create_task("semseg", **scenes.task_options["semseg"]),
        "instance": create_task("instance", **scenes.task_options["instance"]),
    }
    logits = torch.nn.functional.one_hot(batch["semseg"], 7).permute(0, 3, 1, 2).float()
    offsets, _ = centroid_offsets(batch["instance"])
    predictions = evaluation_inputs(tasks, {"semseg": logits, "instance": offsets})
    metric = tasks["instance"].metrics()
    metric.update(predictions["instance"], tasks["instance"].evaluation_target(batch))
    result = metric.compute()
    assert result["offset_error"] == 0.0
    assert result["ap50"] > 85.0 and result["ap50_agnostic"] > 85.0
    metric.reset()
    metric.update(predictions["instance"], batch["instance"])
    assert np.isnan(metric.compute()["ap50"]) and metric.compute()["ap50_agnostic"] > 85.0
    picture = tasks["instance"].visualize(predictions["instance"][0])
    assert picture.shape == (64, 128, 3) and picture.dtype == np.uint8

    alone = evaluation_inputs({"instance": tasks["instance"]}, {"instance": offsets})
    metric = tasks["instance"].metrics()
    metric.update(alone["instance"], batch["instance"])
    assert metric.compute()["offset_error"] == 0.0 and np.isnan(metric.compute()["ap"])


def test_unknown_grouping_key_names_it() -> None:
    with pytest.raises(ConfigError, match="grouping.*min_sample"):
        InstanceOffsets(instance_classes=[1], grouping={"min_sample": 3})


def test_evaluation_target_carries_the_semantic_label_and_the_palette_mask() -> None:
    """Grouping enabled: the ids with the semantic label; outside a Task Palette mask no
    instance and void. Without grouping or without a semantic label: the ids alone."""
    semantic = torch.tensor([[[0, 3, 3], [4, 4, 3], [0, 0, 0]]])
    labels = {"instance": IDS, "semseg": semantic}
    task = InstanceOffsets(instance_classes=[3, 4])
    mask = torch.ones_like(IDS, dtype=torch.bool)
    mask[0, 0] = False
    target = task.evaluation_target(labels, mask)
    assert isinstance(target, InstanceMap)
    assert target.ids[0, 0].tolist() == [0, 0, 0] and torch.equal(target.ids[0, 1:], IDS[0, 1:])
    assert target.semantic[0, 0].tolist() == [255] * 3
    assert torch.equal(target.semantic[0, 1:], semantic[0, 1:])
    assert task.evaluation_target({"instance": IDS}) is IDS
    assert InstanceOffsets().evaluation_target(labels) is IDS
