"""Adding a task is one class and one registry call: a task defined in this file is written to
and read from the folder format, trained 3 steps through the engine, evaluated, predicted
and resumed, with nothing else in the library edited."""

import numpy as np
import torch
import torch.nn.functional as F

from densetasks.data import SyntheticScenes, write_folder_dataset
from densetasks.data.sample import IGNORE_INDEX, LabelKind
from densetasks.metrics.saliency import SaliencyMetrics
from densetasks.tasks._common import masked_mean
from densetasks.tasks.base import Likelihood, Task
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

    def from_composite(self, composite):
        return composite.mean(dim=1, keepdim=True)

    def to_composite(self, label):
        return label.clamp(max=1).float()[:, None].expand(-1, 3, -1, -1)


def foreground_samples(n: int, seed: int):
    """Synthetic scenes with only the new task's label: semantic class > 2 (the objects)."""
    for index, sample in enumerate(SyntheticScenes(n, size=(32, 32), seed=seed)):
        label = (sample["semseg"] > 2).to(torch.uint8)
        label[sample["semseg"] == IGNORE_INDEX] = IGNORE_INDEX
        yield {"image": sample["image"], "foreground": label, "meta": {"name": f"s{seed}_{index}"}}


def test_a_task_defined_here_goes_end_to_end(register, run_end_to_end, tmp_path):
    register(TASKS, "foreground", Foreground)
    root = tmp_path / "data"
    for seed, (split, n) in enumerate({"train": 8, "val": 4, "test": 4}.items()):
        write_folder_dataset(foreground_samples(n, seed), root, split, label_kinds())
    result = run_end_to_end(
        {
            "tasks": {"foreground": {}},
            "data": {"dataset": "folder", "root": str(root), "batch_size": 2},
            "model": {
                "architecture": "single_task",
                "encoder": "tiny",
                "options": {"bottleneck": "none"},
            },
        }
    )
    assert 0.0 <= result["test"]["metrics"]["foreground"]["maxF"] <= 100.0
    assert result["prediction"].predictions["foreground"].shape == (40, 36)
