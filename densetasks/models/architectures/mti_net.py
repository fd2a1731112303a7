"""MTI-Net (Vandenhende, Georgoulis & Van Gool, ECCV 2020), as the authors' code (the survey
code base, ``models/mti_net.py``) builds it, on the encoder's four deepest feature maps.

On HRNet those are its four branches (strides 4 / 8 / 16 / 32); on a ResNet at output stride
32 they are layer1 … layer4 at the same strides. Scale ``s`` = 0 … 3 is the ``s``-th of them,
finest first. From the coarsest scale to the finest:

1. **Initial task predictions** (Sec. 3.2): per task, two basic residual blocks on the scale's
   feature (concatenated, below the coarsest scale, with the task's propagated feature from
   the scale below, upsampled 2×) and a 1×1 prediction: the auxiliary output
   ``"<task>@scale<s>"``, supervised like the final one in training (deep supervision).
2. **Feature propagation** (Sec. 3.3, the FPM) to the next finer scale: the tasks' features
   concatenated, a non-linear function (two basic blocks and a 1×1 conv) whose output is
   turned into a softmax mask on the concatenation, a basic block back to one task's width,
   and a squeeze-and-excitation per task added to the task's feature.
3. **Multi-modal distillation** at every scale (Sec. 3.2): PAD-Net's attention-guided
   messages between the tasks (:class:`~densetasks.models.cross_task.PadNetDistillation`).
4. **Feature aggregation** (Sec. 3.4): per task the four distilled features upsampled to the
   finest scale, concatenated, 1×1 conv + BN + ReLU, 1×1 conv to the task's channels (the
   HRNet segmentation head), then bilinear to the image.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from densetasks.errors import ConfigError
from densetasks.models.base import Architecture, AuxiliaryOutput, Encoder
from densetasks.models.columns import check_task_channels
from densetasks.models.cross_task import PadNetDistillation
from densetasks.models.heads import upsample

SCALES = 4
"""MTI-Net's scales: the encoder's four deepest feature maps."""

SE_REDUCTION = 16
"""Squeeze-and-excitation reduction ratio r (the authors' ``SEBlock``)."""


class SqueezeExcitation(nn.Module):
    """``x ⊙ σ(W2 ReLU(W1 mean_hw(x)))`` with ``W1`` to ``channels // 16`` (at least 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(1, channels // SE_REDUCTION)
        self.squeeze = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.squeeze(x.mean(dim=(2, 3)))
        return x * weights[:, :, None, None]


def basic_block(in_channels: int, channels: int) -> BasicBlock:
    """A ResNet basic block, with a 1×1 conv + BN shortcut when the width changes."""
    shortcut = None
    if in_channels != channels:
        shortcut = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels)
        )
    return BasicBlock(in_channels, channels, downsample=shortcut)


class InitialPrediction(nn.Module):
    """One scale's per-task refinement (two basic blocks to ``channels``) and 1×1 prediction."""

    def __init__(self, task_channels: dict[str, int], in_channels: int, channels: int) -> None:
        super().__init__()
        self.refine = nn.ModuleDict(
            {
                task: nn.Sequential(
                    basic_block(in_channels, channels), basic_block(channels, channels)
                )
                for task in task_channels
            }
        )
        self.predict = nn.ModuleDict(
            {task: nn.Conv2d(channels, out, 1) for task, out in task_channels.items()}
        )

    def forward(
        self, feature: torch.Tensor, propagated: dict[str, torch.Tensor] | None
    ) -> dict[str, torch.Tensor]:
        """Each task's refined feature; ``propagated``: the tasks' features from the coarser
        scale, upsampled to this one and concatenated to ``feature``."""
        refined = {}
        for task, refine in self.refine.items():
            x = feature
            if propagated is not None:
                x = torch.cat([feature, upsample(propagated[task], feature.shape[-2:])], dim=1)
            refined[task] = refine(x)
        return refined


class FeaturePropagation(nn.Module):
    """The FPM: a shared representation of every task's feature, selected per task.

    ``shared = f(concat)`` (``f``: basic block to a quarter of the concatenation's width,
    basic block, 1×1 conv back); ``concat`` weighted by ``softmax(shared)``, taken, as the
    authors' code does, over groups of ``T`` consecutive channels (their ``view(B, C/T, T,
    H, W)`` of a concatenation that is task-major); a basic block to one task's width; per
    task a squeeze-and-excitation of the result plus the task's own feature.
    """

    def __init__(self, tasks: Sequence[str], channels: int) -> None:
        super().__init__()
        self.tasks = list(tasks)
        total = len(self.tasks) * channels
        reduced = total // 4
        self.non_linear = nn.Sequential(
            basic_block(total, reduced), basic_block(reduced, reduced), nn.Conv2d(reduced, total, 1)
        )
        self.reduce = basic_block(total, channels)
        self.excite = nn.ModuleDict({task: SqueezeExcitation(channels) for task in self.tasks})

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        concat = torch.cat([features[task] for task in self.tasks], dim=1)
        batch, channels, height, width = concat.shape
        grouped = (batch, channels // len(self.tasks), len(self.tasks), height, width)
        mask = F.softmax(self.non_linear(concat).view(grouped), dim=2)
        shared = self.reduce((mask * concat.view(grouped)).view(concat.shape))
        return {task: self.excite[task](shared) + features[task] for task in self.tasks}


class FeatureAggregation(nn.Module):
    """One task's head on the four distilled features: upsampled to the finest, concatenated,
    1×1 conv + BN + ReLU, 1×1 conv to ``out_channels`` (both convolutions with biases)."""

    def __init__(self, channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        total = sum(channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(total, total, 1),
            nn.BatchNorm2d(total),
            nn.ReLU(),
            nn.Conv2d(total, out_channels, 1),
        )

    def forward(self, features: list[torch.Tensor], size: torch.Size) -> torch.Tensor:
        finest = features[0].shape[-2:]
        x = torch.cat([features[0], *(upsample(f, finest) for f in features[1:])], dim=1)
        return upsample(self.fuse(x), size)


class MTINet(Architecture):
    """MTI-Net on the encoder's four deepest features (two or more tasks).

    In training it also returns ``"<task>@scale<s>"`` for ``s`` = 0 … 3 (the initial task
    predictions at 1/4 … 1/32 of the image for strides 4 … 32), each supervised with weight
    ``aux_weight`` (1: the authors' loss adds every scale's loss with the task's weight).
    """

    def __init__(
        self, task_channels: dict[str, int], encoder: Encoder, aux_weight: float = 1.0
    ) -> None:
        check_task_channels(task_channels)
        if len(task_channels) < 2:
            raise ConfigError(
                f"MTI-Net distils between tasks and needs two or more; got {list(task_channels)}"
            )
        if len(encoder.feature_info) < SCALES:
            raise ConfigError(
                f"MTI-Net needs an encoder with {SCALES} or more feature maps; "
                f"{type(encoder).__name__} has {len(encoder.feature_info)}"
            )
        if aux_weight < 0:
            raise ConfigError(f"model.options.aux_weight must be >= 0; got {aux_weight}")
        super().__init__(task_channels)
        tasks = list(task_channels)
        self.encoder = encoder
        channels = [spec.channels for spec in encoder.feature_info[-SCALES:]]
        self.initial = nn.ModuleDict(
            {
                str(s): InitialPrediction(
                    task_channels,
                    channels[s] + (channels[s + 1] if s + 1 < SCALES else 0),
                    channels[s],
                )
                for s in range(SCALES)
            }
        )
        self.propagation = nn.ModuleDict(
            {str(s): FeaturePropagation(tasks, channels[s]) for s in range(1, SCALES)}
        )
        self.distillation = nn.ModuleDict(
            {str(s): PadNetDistillation(tasks, channels[s]) for s in range(SCALES)}
        )
        self.heads = nn.ModuleDict(
            {task: FeatureAggregation(channels, out) for task, out in task_channels.items()}
        )
        self.auxiliary_outputs = tuple(
            AuxiliaryOutput(task, f"scale{s}", aux_weight) for s in range(SCALES) for task in tasks
        )

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.encoder(image)[-SCALES:]
        refined: dict[int, dict[str, torch.Tensor]] = {}
        outputs = {}
        propagated = None
        for s in reversed(range(SCALES)):
            initial = self.initial[str(s)]
            refined[s] = initial(features[s], propagated)
            if self.training:
                outputs.update(
                    {f"{t}@scale{s}": initial.predict[t](x) for t, x in refined[s].items()}
                )
            if s > 0:
                propagated = self.propagation[str(s)](refined[s])
        distilled = [self.distillation[str(s)](refined[s]) for s in range(SCALES)]
        size = image.shape[-2:]
        for task, head in self.heads.items():
            outputs[task] = head([scale[task] for scale in distilled], size)
        return outputs

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def shared_parameters(self) -> list[nn.Parameter]:
        """The encoder, every scale's refinement blocks and the FPMs, coarse to fine: each
        task's feature reaches every other task through the FPM and the distillation. The
        1×1 initial predictions, the distillation messages and the heads are per task."""
        shared = list(self.encoder.parameters())
        for s in reversed(range(SCALES)):
            shared += list(self.initial[str(s)].refine.parameters())
            if s > 0:
                shared += list(self.propagation[str(s)].parameters())
        return shared
