"""NDDR-CNN (Gao et al., CVPR 2019; the survey of Vandenhende et al.): the NDDR layer's
function and identity-like initialisation, what is shared for any placement of the layers,
options.

Equality with the survey's code is checked by tools/compare_mtl_pytorch.py (docs/models.md).
"""

import pytest
import torch

from densetasks.errors import ConfigError
from densetasks.models import create_model
from densetasks.models.architectures.nddr_cnn import NDDR, NDDRLayer

from .sharing import (
    SMALL,
    assert_shares_what_every_task_reaches,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: fastest on one thread

TASKS = {"semseg": 5, "depth": 1, "normals": 3}


def small(tasks=TASKS, **options) -> NDDR:
    torch.manual_seed(0)
    return create_model("nddr_cnn", tasks, encoder="tiny", **{**SMALL, **options})


def test_a_layer_starts_as_alpha_times_its_own_task_plus_beta_times_the_others():
    layer = NDDRLayer(["a", "b"], 2, alpha=0.9, beta=0.1, momentum=0.05).eval()
    conv, norm, _ = layer.layers["b"]
    expected = torch.tensor([[0.1, 0.0, 0.9, 0.0], [0.0, 0.1, 0.0, 0.9]])
    torch.testing.assert_close(conv.weight[..., 0, 0].detach(), expected, rtol=0, atol=0)
    assert (norm.weight.tolist(), norm.bias.tolist(), norm.momentum) == (
        [1.0, 1.0],
        [0.0, 0.0],
        0.05,
    )
    a = torch.tensor([1.0, -4.0]).view(1, 2, 1, 1)
    b = torch.tensor([10.0, 20.0]).view(1, 2, 1, 1)
    with torch.no_grad():
        mixed = layer({"a": a, "b": b})
    scale = (1 + norm.eps) ** -0.5  # evaluation mode: running mean 0, variance 1
    torch.testing.assert_close(mixed["a"].flatten(), torch.tensor([1.9, 0.0]) * scale)
    torch.testing.assert_close(mixed["b"].flatten(), torch.tensor([9.1, 17.6]) * scale)


def test_layers_sit_after_every_stage_by_default():
    assert sorted(small().units) == ["0", "1", "2", "3", "4"]
    assert sorted(small(layers=[2, 4]).units) == ["2", "4"]


@pytest.mark.parametrize("layers", [None, [0, 2], [3]])
def test_shared_parameters_are_what_every_task_reaches(layers):
    model = small(layers=layers)
    assert_shares_what_every_task_reaches(model, torch.randn(2, 3, 32, 32))


def test_bad_layers_are_named():
    with pytest.raises(ConfigError, match=r"model.options.layers: \[-1\] .* from 0 to 4"):
        small(layers=[-1])
