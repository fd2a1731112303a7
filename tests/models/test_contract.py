"""The model contract end to end: three toy architectures defined here go through the engine
(train 3 steps, kill and resume, evaluate, predict) with nothing but a registry call.

1. A palette-conditioned model with one composite output (CompositeTasking's shape).
2. A model with auxiliary outputs, instance offsets at 1/4 resolution among them.
3. A model that branches a timm encoder at a chosen stage (network fission's shape).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densetasks.cli.main import main
from densetasks.data.derive import centroid_offsets
from densetasks.data.io import write_image
from densetasks.data.palettes import read_palette_png, write_palette_png
from densetasks.data.sample import IGNORE_INDEX, LabelKind
from densetasks.engine.inference import Predictor
from densetasks.engine.loop import task_losses
from densetasks.engine.passes import condition_inputs
from densetasks.errors import DataError
from densetasks.models import (
    ARCHITECTURES,
    Architecture,
    AuxiliaryOutput,
    CompositeAdapter,
    ConditionInput,
    EvaluationPass,
    create_encoder,
    per_task_plan,
)
from densetasks.models.base import AdaptedOutputs

DATA = {"options": {"n_train": 8, "n_val": 4, "n_test": 4, "size": [32, 32]}, "batch_size": 2}


def random_palette(batch, generator: torch.Generator) -> torch.Tensor:
    """A task id per pixel among the model's two tasks (rule "Rrnd" of CompositeTasking)."""
    image = batch["image"]
    return torch.randint(0, 2, (image.shape[0], *image.shape[-2:]), generator=generator)


def halves(batch) -> torch.Tensor:
    """Task 0 on the left half, task 1 on the right half."""
    image = batch["image"]
    palette = torch.zeros(image.shape[0], *image.shape[-2:], dtype=torch.int64)
    palette[..., image.shape[-1] // 2 :] = 1
    return palette.to(image.device)


class ToyComposite(Architecture):
    """Image + one-hot palette -> one 3-channel composite output, decoded per task."""

    condition_inputs = (ConditionInput("palette", LabelKind.MASK, sample=random_palette),)
    output_adapter = CompositeAdapter()

    def __init__(self, task_channels, encoder):
        super().__init__(task_channels)
        self.encoder = encoder
        width = self.encoder.feature_info[0].channels + len(task_channels)
        self.decoder = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, image, palette):
        features = self.encoder.forward_stages(image, 0, 1)[0]
        features = F.interpolate(features, size=image.shape[-2:], mode="bilinear")
        known = palette != IGNORE_INDEX
        one_hot = F.one_hot(palette.clamp(max=len(self.task_channels) - 1), len(self.task_channels))
        code = (one_hot * known[..., None]).permute(0, 3, 1, 2).to(features.dtype)
        return {"composite": self.decoder(torch.cat([features, code], dim=1))}

    def evaluation_plan(self):
        return [
            *per_task_plan(list(self.task_channels), "palette"),
            EvaluationPass(tuple(self.task_channels), {"palette": halves}, rule="halves"),
        ]

    def encoder_parameters(self):
        return list(self.encoder.parameters())

    def shared_parameters(self):
        return list(self.parameters())


class ToyAuxiliary(Architecture):
    """Full-resolution heads from stride 2 and training-only ``task@quarter`` heads from
    stride 4, weighted by ``aux_weight``."""

    def __init__(self, task_channels, encoder, aux_weight=0.25):
        super().__init__(task_channels)
        self.encoder = encoder
        half, quarter = (spec.channels for spec in self.encoder.feature_info[:2])
        self.heads = nn.ModuleDict({t: nn.Conv2d(half, c, 1) for t, c in task_channels.items()})
        self.quarter = nn.ModuleDict(
            {t: nn.Conv2d(quarter, c, 1) for t, c in task_channels.items()}
        )
        self.auxiliary_outputs = tuple(
            AuxiliaryOutput(task, "quarter", aux_weight) for task in task_channels
        )

    def forward(self, image):
        half, quarter = self.encoder.forward_stages(image, 0, 2)
        outputs = {
            task: F.interpolate(head(half), size=image.shape[-2:], mode="bilinear")
            for task, head in self.heads.items()
        }
        if self.training:
            outputs.update({f"{t}@quarter": head(quarter) for t, head in self.quarter.items()})
        return outputs

    def encoder_parameters(self):
        return list(self.encoder.parameters())

    def shared_parameters(self):
        return list(self.encoder.parameters())


class ToyBranch(Architecture):
    """A timm encoder shared up to stage ``split``; each task runs its own copy of the deeper
    stages and a 1×1 head on the deepest feature."""

    def __init__(self, task_channels, encoder, split=2):
        super().__init__(task_channels)
        self.split = split
        self.encoder = encoder
        self.branches = nn.ModuleDict({task: encoder.rebuild() for task in task_channels})
        deepest = self.encoder.feature_info[-1].channels
        self.heads = nn.ModuleDict({t: nn.Conv2d(deepest, c, 1) for t, c in task_channels.items()})

    def forward(self, image):
        shared = self.encoder.forward_stages(image, 0, self.split)[-1]
        return {
            task: F.interpolate(
                self.heads[task](branch.forward_stages(shared, self.split, None)[-1]),
                size=image.shape[-2:],
                mode="bilinear",
            )
            for task, branch in self.branches.items()
        }

    def encoder_parameters(self):
        return list(self.encoder.parameters())

    def shared_parameters(self):
        return list(self.encoder.parameters())


def test_a_palette_conditioned_composite_model_goes_end_to_end(register, run_end_to_end):
    register(ARCHITECTURES, "toy_composite", ToyComposite)
    result = run_end_to_end(
        {
            "tasks": {"semseg": {}, "depth": {}},
            "data": DATA,
            "model": {"architecture": "toy_composite", "encoder": "tiny"},
        }
    )
    assert set(result["test"]["by_rule"]["halves"]) == {"semseg", "depth"}
    assert result["test"]["metrics"]["depth"] != result["test"]["by_rule"]["halves"]["depth"]
    predictor = Predictor.from_run_dir(result["run"])
    image = torch.rand(3, 16, 16)
    palette = torch.full((16, 16), IGNORE_INDEX, dtype=torch.int64)
    palette[:8] = 1
    painted = predictor(image, {"palette": palette})
    assert painted.masks["depth"][:8].all() and not painted.masks["depth"][8:].any()
    assert not painted.masks["semseg"].any()
    composite = painted.composite_picture(predictor.tasks)
    np.testing.assert_array_equal(composite[8:], 0)
    np.testing.assert_array_equal(composite[:8], painted.pictures(predictor.tasks)["depth"][:8])
    _predict_with_palettes(result["run"], palette)


def _predict_with_palettes(run, palette):
    """``densetasks predict --palette`` and ``--rule`` write the palette and the composite."""
    folder = run.parent
    write_image(folder / "photo.png", torch.rand(3, 16, 16))
    write_palette_png(folder / "palette.png", palette)
    command = ["--debug", "predict", str(run), str(folder / "photo.png")]
    assert (
        main([*command, "--out", str(folder / "painted"), "--palette", str(folder / "palette.png")])
        == 0
    )
    assert torch.equal(read_palette_png(folder / "painted" / "photo_palette.png"), palette)
    assert (folder / "painted" / "photo_composite.png").is_file()
    assert main([*command, "--out", str(folder / "mosaic"), "--rule", "R1r", "--seed", "3"]) == 0
    mosaic = read_palette_png(folder / "mosaic" / "photo_palette.png")
    assert set(mosaic.unique().tolist()) <= {0, 1}
    write_palette_png(folder / "small.png", palette[:8])
    with pytest.raises(DataError, match=r"small.png \(for .*photo.png\): the palette is 8x16"):
        main([*command, "--out", str(folder / "bad"), "--palette", str(folder / "small.png")])


def test_a_missing_condition_is_named():
    model = ToyComposite({"semseg": 3, "depth": 1}, create_encoder("tiny"))
    batch = {"image": torch.rand(1, 3, 8, 8)}
    with pytest.raises(DataError, match="conditioning input 'palette'"):
        condition_inputs(model, batch)
    drawn = condition_inputs(model, batch, torch.Generator().manual_seed(0))["palette"]
    assert drawn.shape == (1, 8, 8)


def test_the_composite_adapter_masks_each_task_by_its_palette_id():
    from densetasks.tasks.registry import create_task

    tasks = {"semseg": create_task("semseg", num_classes=3), "depth": create_task("depth")}
    palette = torch.tensor([[[0, 1], [IGNORE_INDEX, 1]]])
    adapted = CompositeAdapter()(
        {"composite": torch.zeros(1, 3, 2, 2)}, tasks, {"palette": palette}
    )
    assert adapted.masks["semseg"].tolist() == [[[True, False], [False, False]]]
    assert adapted.masks["depth"].tolist() == [[[False, True], [False, True]]]
    assert adapted.outputs["semseg"].shape == (1, 3, 2, 2)
    assert torch.equal(
        adapted.outputs["depth"], tasks["depth"].from_composite(torch.zeros(1, 3, 2, 2))
    )


def test_auxiliary_outputs_with_instance_offsets_go_end_to_end(register, run_end_to_end):
    register(ARCHITECTURES, "toy_auxiliary", ToyAuxiliary)
    result = run_end_to_end(
        {
            "tasks": {"semseg": {}, "instance": {}},
            "data": DATA,
            "model": {
                "architecture": "toy_auxiliary",
                "encoder": "tiny",
                "options": {"aux_weight": 0.4},
            },
        }
    )
    model = Predictor.from_run_dir(result["run"]).run.model
    assert [aux.weight for aux in model.auxiliary_outputs] == [0.4, 0.4]
    assert all("@" not in key for key in result["prediction"].outputs)
    model.eval()
    assert all("@" not in key for key in model(torch.rand(1, 3, 32, 32)))


def test_instance_offsets_at_quarter_resolution_are_supervised_in_full_resolution_pixels():
    """The auxiliary loss equals the L1 loss against a hand-resized target: offsets predicted
    on the 1/4 grid, in its pixels, are 4 × larger in full-resolution pixels."""
    from densetasks.tasks.registry import create_task

    task = create_task("instance")
    ids = torch.zeros(1, 16, 16, dtype=torch.int64)
    ids[0, 4:12, 0:8] = 1
    ids[0, 0:4, 8:16] = 2
    small = centroid_offsets(ids[:, 1::4, 1::4])[0]  # offsets on the 1/4 grid, in its pixels
    main = torch.zeros(1, 2, 16, 16)
    adapted = AdaptedOutputs({"instance": main, "instance@quarter": small})
    losses = task_losses(
        {"instance": task},
        adapted,
        {"instance": ids},
        [AuxiliaryOutput("instance", "quarter", 0.5)],
    )
    target, inside = centroid_offsets(ids)
    hand = F.interpolate(small, size=(16, 16), mode="bilinear", align_corners=False) * 4.0
    aux_loss = (hand - target).abs().sum(dim=1)[inside].mean()
    main_loss = target.abs().sum(dim=1)[inside].mean()
    assert losses["instance"].item() == pytest.approx((main_loss + 0.5 * aux_loss).item())
    assert aux_loss < 0.5 * main_loss  # the resized offsets point close to the centroids


def test_a_model_branching_a_timm_encoder_goes_end_to_end(register, run_end_to_end):
    register(ARCHITECTURES, "toy_branch", ToyBranch)
    result = run_end_to_end(
        {
            "tasks": {"semseg": {}, "depth": {}},
            "data": DATA,
            "model": {
                "architecture": "toy_branch",
                "encoder": "test_resnet",
                "options": {"split": 3},
            },
        }
    )
    model = Predictor.from_run_dir(result["run"]).run.model
    image = torch.rand(1, 3, 32, 32)
    shared = model.encoder.forward_stages(image, 0, 3)
    assert torch.equal(shared[-1], model.encoder(image)[2])
