"""Adding a task is one class and one registry call: each task defined in this file is
written to and read from the folder format, trained 3 steps through the engine, killed and
resumed, evaluated, predicted and exported to ONNX with parity, with nothing else in the
library edited. One is a binary map; the other a plain dense regression (label kind
REGRESSION: any float, NaN = no label), the kind a new per-pixel quantity takes."""

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from densetasks.data import SyntheticScenes, write_folder_dataset
from densetasks.data.sample import IGNORE_INDEX, LabelKind
from densetasks.metrics.base import Metric
from densetasks.metrics.saliency import SaliencyMetrics
from densetasks.pictures import ColourBar
from densetasks.tasks._common import masked_mean
from densetasks.tasks.base import Likelihood, Meaning, Task
from densetasks.tasks.registry import TASKS, label_kinds


class Foreground(Task):
    """Is the pixel on an object rather than the room (a binary map, plain BCE)?"""

    name = "foreground"
    label_kind = LabelKind.BINARY
    likelihood = Likelihood.CLASSIFICATION
    primary_metric = "maxF"

    @property
    def channels(self) -> int:
        return 1

    def loss(self, output, label, mask=None):
        self.check_output(output, label)
        valid = self.valid(label, mask)
        target = label.clamp(max=1).float()
        bce = F.binary_cross_entropy_with_logits(output[:, 0], target, reduction="none")
        return masked_mean(bce, valid)

    def decode(self, output):
        return torch.sigmoid(output[:, 0])

    def metrics(self):
        return SaliencyMetrics()

    def visualize(self, value):
        grey = (value.float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        return np.repeat(grey[..., None], 3, axis=-1)

    def meaning(self):
        return Meaning("probability that the pixel is on an object", value_range=(0.0, 1.0))

    def from_composite(self, composite):
        return composite.mean(dim=1, keepdim=True)

    def to_composite(self, label):
        return label.clamp(max=1).float()[:, None].expand(-1, 3, -1, -1)


class MeanAbsoluteError(Metric):
    """Mean |prediction − label| over the labelled pixels of the whole set (sums as states)."""

    higher_is_better: ClassVar[dict[str, bool]] = {"mae": False}

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.int64))

    def update(self, pred, target) -> None:
        valid = ~target.isnan()
        self.set_state("total", self.total + (pred - target)[valid].abs().double().sum())
        self.set_state("count", self.count + valid.sum())

    def compute(self):
        return {"mae": float(self.total / self.count) if self.count else float("nan")}


class Brightness(Task):
    """The scene's grey level ``(R + G + B) / 3`` of the image, a dense regression with an
    L1 loss; unlabelled (NaN) on the ceiling, to have pixels without a label."""

    name = "brightness"
    label_kind = LabelKind.REGRESSION
    likelihood = Likelihood.REGRESSION
    primary_metric = "mae"

    @property
    def channels(self) -> int:
        return 1

    def loss(self, output, label, mask=None):
        self.check_output(output, label)
        valid = self.valid(label, mask)
        error = torch.where(valid[:, None], output - label, 0.0).abs()
        return masked_mean(error[:, 0], valid)

    def decode(self, output):
        return output

    def metrics(self):
        return MeanAbsoluteError()

    def visualize(self, value):
        values = value[0].detach().double().numpy()
        return self.bar(values).colours(values)

    def picture_key(self, value, mask=None):
        return self.bar(value[0].detach().double().numpy())

    @staticmethod
    def bar(values) -> ColourBar:
        finite = values[~np.isnan(values)]
        return ColourBar("gray", float(finite.min(initial=0.0)), float(finite.max(initial=1.0)))

    def meaning(self):
        return Meaning("grey level of the image", channels=("grey",), value_range=(0.0, 1.0))

    def from_composite(self, composite):
        return composite.mean(dim=1, keepdim=True)

    def to_composite(self, label):
        return label.nan_to_num(0.0).expand(-1, 3, -1, -1)


def new_task_samples(n: int, seed: int):
    """Synthetic scenes with only the new tasks' labels: the objects (semantic class > 2) and
    the grey level, NaN on the ceiling (class 2)."""
    for index, sample in enumerate(SyntheticScenes(n, size=(32, 32), seed=seed)):
        foreground = (sample["semseg"] > 2).to(torch.uint8)
        foreground[sample["semseg"] == IGNORE_INDEX] = IGNORE_INDEX
        grey = sample["image"].mean(dim=0, keepdim=True)
        grey[:, sample["semseg"] == 2] = float("nan")
        yield {
            "image": sample["image"],
            "foreground": foreground,
            "brightness": grey,
            "meta": {"name": f"s{seed}_{index}"},
        }


def test_tasks_defined_here_go_end_to_end(register, run_end_to_end, tmp_path):
    register(TASKS, "foreground", Foreground)
    register(TASKS, "brightness", Brightness)
    root = tmp_path / "data"
    for seed, (split, n) in enumerate({"train": 8, "val": 4, "test": 4}.items()):
        write_folder_dataset(new_task_samples(n, seed), root, split, label_kinds())
    stored = np.load(root / "brightness" / "s0_0.npy")
    assert stored.shape == (1, 32, 32) and np.isnan(stored).any() and not np.isnan(stored).all()
    result = run_end_to_end(
        {
            "tasks": {"foreground": {}, "brightness": {}},
            "data": {"dataset": "folder", "root": str(root), "batch_size": 2},
            "model": {
                "architecture": "hard_sharing",
                "encoder": "tiny",
                "options": {"bottleneck": "none"},
            },
        }
    )
    metrics = result["test"]["metrics"]
    assert 0.0 <= metrics["foreground"]["maxF"] <= 100.0
    assert 0.0 <= metrics["brightness"]["mae"] < 10.0
    assert result["prediction"].predictions["foreground"].shape == (40, 36)
    assert result["prediction"].predictions["brightness"].shape == (1, 40, 36)
    rows = {row.output: row for row in result["parity"].rows if row.images == "test"}
    assert rows["brightness"].measure == "mean abs difference / max(1, mean abs)"
    sidecar = (result["export"].parent / "model.onnx.json").read_text()
    assert "grey level of the image" in sidecar
