"""Adding an architecture is one class and one registry call: the partly shared network
defined here is trained 3 steps through the engine, killed and resumed bit for bit,
evaluated, predicted and exported to ONNX with parity, and its ``shared_parameters()``
meets the contract (every task's loss reaches them, and nothing else that every task's loss
reaches is left out), with nothing else in the library edited."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densetasks.models import ARCHITECTURES, Architecture, create_model
from densetasks.tasks.registry import create_task

from ..conftest import SYNTHETIC
from .test_shared_parameters import check_shared_parameters, synthetic_batch


class ToyStitch(Architecture):
    """Cross-stitch in miniature (Misra et al., CVPR 2016): the encoder's deepest feature,
    then a column per task of two 3×3 convolutions with one cross-stitch unit — a learned mix of
    the columns' features — after the first only, and a 1×1 head per task.

    Partly shared: every task's loss reaches the encoder, the first convolution of every
    column and the unit (through the mix); the second convolutions and the heads are each
    task's own.
    """

    def __init__(self, task_channels, encoder, width=8):
        super().__init__(task_channels)
        self.encoder = encoder
        names, features = list(task_channels), encoder.feature_info[-1].channels
        self.first = nn.ModuleDict({t: nn.Conv2d(features, width, 3, padding=1) for t in names})
        mix = 0.8 * torch.eye(len(names)) + 0.2 / len(names)
        self.unit = nn.Parameter(mix)
        self.second = nn.ModuleDict({t: nn.Conv2d(width, width, 3, padding=1) for t in names})
        self.heads = nn.ModuleDict({t: nn.Conv2d(width, c, 1) for t, c in task_channels.items()})

    def forward(self, image):
        feature = self.encoder(image)[-1]
        columns = torch.stack([F.relu(conv(feature)) for conv in self.first.values()])
        mixed = torch.einsum("ij,jbchw->ibchw", self.unit, columns)
        return {
            task: F.interpolate(
                self.heads[task](F.relu(self.second[task](mixed[index]))),
                size=image.shape[-2:],
                mode="bilinear",
                align_corners=False,
            )
            for index, task in enumerate(self.task_channels)
        }

    def encoder_parameters(self):
        return list(self.encoder.parameters())

    def shared_parameters(self):
        return [*self.encoder.parameters(), *self.first.parameters(), self.unit]


def test_an_architecture_defined_here_goes_end_to_end(register, run_end_to_end):
    register(ARCHITECTURES, "toy_stitch", ToyStitch)
    result = run_end_to_end(
        {
            "tasks": {"semseg": {}, "depth": {}},
            "data": {**SYNTHETIC, "eval_size": [32, 32]},
            "model": {"architecture": "toy_stitch", "encoder": "tiny", "options": {"width": 6}},
        }
    )
    assert set(result["test"]["metrics"]) == {"semseg", "depth"}
    assert result["prediction"].predictions["semseg"].shape == (40, 36)
    assert {"semseg", "depth", "semseg_raw", "depth_raw"} <= {
        row.output for row in result["parity"].rows
    }


def test_its_shared_parameters_meet_the_contract(register):
    register(ARCHITECTURES, "toy_stitch", ToyStitch)
    tasks = {"depth": create_task("depth"), "normals": create_task("normals")}
    torch.manual_seed(0)
    model = create_model("toy_stitch", {"depth": 1, "normals": 3}, encoder="tiny")
    check_shared_parameters(model, tasks, synthetic_batch())
    columns_only = [*model.first.parameters(), model.unit]
    model.shared_parameters = lambda: columns_only  # the encoder left out: named
    with pytest.raises(AssertionError, match="not shared: .*encoder"):
        check_shared_parameters(model, tasks, synthetic_batch())
