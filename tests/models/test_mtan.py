"""MTAN (Liu, Johns & Davison, CVPR 2019; the authors' ResNet code and the survey's): where
the attention reads and what it multiplies, the shared refinements and their pooling,
encoders whose stages cannot be attended, what is shared.

Equality with the survey's code is checked by tools/compare_mtl_pytorch.py (docs/models.md).
"""

import pytest
import torch
from torch import nn

from densetasks.errors import ConfigError
from densetasks.models import Encoder, FeatureSpec, create_encoder, create_model
from densetasks.models.architectures.mtan import MTAN

from .sharing import (
    SMALL,
    assert_shares_what_every_task_reaches,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: fastest on one thread

TASKS = {"semseg": 5, "depth": 1, "normals": 3}


def small(tasks=TASKS, **options) -> MTAN:
    torch.manual_seed(0)
    return create_model("mtan", tasks, encoder="tiny", **{**SMALL, **options})


def test_attention_per_task_per_stage_and_a_shared_refinement_that_pools_where_the_stride_doubles():
    model = small()  # tiny encoder at output stride 16: strides 2, 4, 8, 16, 16
    assert sorted(model.attention) == ["1", "2", "3", "4"]
    assert all(sorted(masks) == sorted(TASKS) for masks in model.attention.values())
    assert model.attention["1"]["depth"][0].in_channels == 8  # u_b of stage 1 alone
    assert model.attention["2"]["depth"][0].in_channels == 2 * 16  # [u_b, f(a_1)]
    pools = {stage: isinstance(block[-1], nn.MaxPool2d) for stage, block in model.refine.items()}
    assert pools == {"1": True, "2": True, "3": False}


def test_the_mask_reads_the_feature_before_the_last_block_and_weights_the_stage_output():
    model = small().eval()
    image = torch.randn(2, 3, 32, 32)
    seen = {}
    model.attention["1"]["depth"].register_forward_hook(
        lambda _module, inputs, output: seen.update(input=inputs[0], mask=output)
    )
    with torch.no_grad():
        model(image)
        stem = model.encoder.forward_stages(image, 0, 1)[0]
        before, after = model.encoder.forward_stage_blocks(stem, 1)
    torch.testing.assert_close(seen["input"], before, rtol=0, atol=0)
    assert not torch.equal(before, after)


def test_with_masks_of_one_every_task_reads_the_encoders_own_features():
    model = small().eval()
    for masks in model.attention.values():
        for mask in masks.values():
            last_norm = mask[4]
            nn.init.zeros_(last_norm.weight)
            nn.init.constant_(last_norm.bias, 50.0)  # σ(50) is 1 in float32
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outputs = model(image)
        features = model.encoder(image)
        for task, head in model.heads.items():
            torch.testing.assert_close(
                outputs[task], head(features, image.shape[-2:]), rtol=0, atol=0
            )


def test_a_stage_of_one_block_that_changes_the_shape_cannot_be_attended():
    with pytest.raises(
        ConfigError, match="stage 2 over its last block, but in encoder TimmEncoder"
    ):
        create_model("mtan", TASKS, encoder="test_resnet", **SMALL)


def test_the_last_attended_stage_must_be_the_last():
    with pytest.raises(ConfigError, match=r"model.options.stages: \[1, 2\] must end with .* \(4\)"):
        small(stages=[1, 2])


@pytest.mark.parametrize("stages", [None, [2, 4]])
def test_shared_parameters_are_what_every_task_reaches(stages):
    assert_shares_what_every_task_reaches(small(stages=stages), torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("name", ["tiny", "test_resnet", "mobilenetv3_small_100", "test_convnext"])
def test_an_encoder_splits_each_stage_before_its_last_block(name):
    """``forward_stage_blocks`` (the contract MTAN reads) gives each stage's output exactly,
    a ResNet stage's feature before its last residual block, and a ConvNeXt stage's after its
    downsample and every block but the last (at the stage's width, as MTAN's masks need)."""
    encoder = create_encoder(name, output_stride=16).eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = encoder(image)
        x = image
        for stage, feature in enumerate(features):
            before, x = encoder.forward_stage_blocks(x, stage)
            torch.testing.assert_close(x, feature, rtol=0, atol=0)
            if name == "test_convnext":
                assert before.shape == feature.shape
        if name == "test_resnet":  # one block per layer: before it is the stage's input
            torch.testing.assert_close(before, features[-2], rtol=0, atol=0)


def test_an_encoder_without_blocks_says_mtan_cannot_use_it():
    class Plain(Encoder):
        def __init__(self):
            super().__init__()
            self.feature_info = [FeatureSpec(3, 1)]

        def forward_stages(self, inputs, start=0, end=None):
            return [inputs]

    with pytest.raises(ConfigError, match="Plain cannot split a stage before its last block"):
        Plain().forward_stage_blocks(torch.zeros(1, 3, 2, 2), 0)
