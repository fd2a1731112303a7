"""MTI-Net (Vandenhende, Georgoulis & Van Gool, ECCV 2020; the authors' code): initial task
predictions at four scales as training-only auxiliary outputs, the feature propagation
module's softmax as the code takes it, the squeeze-and-excitation, what is shared.

Equality with the authors' code is checked by tools/compare_mtl_pytorch.py (docs/models.md).
"""

import pytest
import torch
from torch import nn

from densetasks.errors import ConfigError
from densetasks.models import create_model
from densetasks.models.architectures.mti_net import FeaturePropagation, SqueezeExcitation

from .sharing import (
    assert_shares_what_every_task_reaches,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: fastest on one thread

TASKS = {"semseg": 5, "depth": 1, "normals": 3}


def test_initial_predictions_at_four_scales_are_auxiliary_outputs_in_training_only():
    torch.manual_seed(0)
    model = create_model("mti_net", TASKS, encoder="tiny", output_stride=32, aux_weight=0.5)
    image = torch.randn(2, 3, 64, 96)
    outputs = model.train()(image)
    for task, channels in TASKS.items():
        assert outputs[task].shape == (2, channels, 64, 96)
        for scale, stride in enumerate((4, 8, 16, 32)):
            assert outputs[f"{task}@scale{scale}"].shape == (
                2,
                channels,
                64 // stride,
                96 // stride,
            )
    declared = {aux.key: aux.weight for aux in model.auxiliary_outputs}
    assert declared == {f"{t}@scale{s}": 0.5 for t in TASKS for s in range(4)}
    assert set(outputs) == set(TASKS) | set(declared)
    with torch.no_grad():
        assert set(model.eval()(image)) == set(TASKS)


def test_the_fpm_softmax_runs_over_groups_of_consecutive_channels_as_the_authors_code():
    """Their ``view(B, C/T, T, H, W)`` of a task-major concatenation: channel ``c·T + n`` is
    weighted by a softmax over ``n`` of the non-linear output's channels ``c·T + 0 … T-1``."""
    torch.manual_seed(0)
    fpm = FeaturePropagation(["a", "b"], 4).eval()
    features = {"a": torch.randn(1, 4, 3, 3), "b": torch.randn(1, 4, 3, 3)}
    concat = torch.cat([features["a"], features["b"]], dim=1)
    with torch.no_grad():
        logits = fpm.non_linear(concat)
        weighted = torch.empty_like(concat)
        for c in range(4):
            group = slice(2 * c, 2 * c + 2)
            weighted[:, group] = torch.softmax(logits[:, group], dim=1) * concat[:, group]
        shared = fpm.reduce(weighted)
        expected = {t: fpm.excite[t](shared) + features[t] for t in features}
        out = fpm(features)
    for task in features:
        torch.testing.assert_close(out[task], expected[task])


def test_squeeze_and_excitation_scales_the_channels():
    block = SqueezeExcitation(32)
    assert block.squeeze[0].out_features == 2  # 32 // 16
    for layer in (block.squeeze[0], block.squeeze[2]):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    x = torch.randn(2, 32, 4, 4)
    torch.testing.assert_close(block(x), 0.5 * x)  # σ(0)
    assert SqueezeExcitation(8).squeeze[0].out_features == 1  # at least one unit


def test_one_task_is_refused():
    with pytest.raises(ConfigError, match="needs two or more; got \\['depth'\\]"):
        create_model("mti_net", {"depth": 1}, encoder="tiny")


def test_shared_parameters_are_what_every_task_reaches():
    torch.manual_seed(0)
    model = create_model("mti_net", TASKS, encoder="tiny", output_stride=32)
    for module in model.modules():  # a dead hidden unit of width 1 would hide its block
        if isinstance(module, SqueezeExcitation):
            nn.init.constant_(module.squeeze[0].bias, 1.0)
    assert_shares_what_every_task_reaches(model, torch.randn(2, 3, 64, 64))
