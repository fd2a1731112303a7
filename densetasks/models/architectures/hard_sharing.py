"""Hard parameter sharing: one encoder + bottleneck for all tasks, one head per task.

This is the "multi-head network" (MHN) baseline of Popovic et al., CVPR 2021 and the
architecture of Kendall et al., CVPR 2018 (ResNet-101 + ASPP shared, a small decoder per
task, App. A).
"""

from typing import Any

import torch
from torch import nn

from densetasks.errors import ConfigError
from densetasks.models.base import Architecture, Encoder
from densetasks.models.bottlenecks import ASPP, create_bottleneck
from densetasks.models.heads import create_head


class HardSharing(Architecture):
    """Shared encoder and bottleneck, then ``heads[task]`` for every task.

    ``bottleneck_options`` and ``head_options`` go to the bottleneck and to every head
    (for example ``{"project": True}`` for ASPP, ``{"kernel_size": 1}`` for the DeepLab head).
    """

    def __init__(
        self,
        task_channels: dict[str, int],
        encoder: Encoder,
        bottleneck: str = "aspp",
        head: str = "deeplab",
        bottleneck_options: dict[str, Any] | None = None,
        head_options: dict[str, Any] | None = None,
    ) -> None:
        self.check_tasks(task_channels)
        super().__init__(task_channels)
        self.encoder = encoder
        self.bottleneck = create_bottleneck(
            bottleneck, self.encoder.feature_info, **(bottleneck_options or {})
        )
        head_options = head_options or {}
        self.heads = nn.ModuleDict(
            {
                task: create_head(head, self.bottleneck.feature_info, channels, **head_options)
                for task, channels in task_channels.items()
            }
        )

    @classmethod
    def check_tasks(cls, task_channels: dict[str, int]) -> None:
        """Raise :class:`ConfigError` unless the tasks suit this architecture."""
        if not task_channels:
            raise ConfigError(f"{cls.__name__} needs at least one task")
        bad = {task: channels for task, channels in task_channels.items() if channels < 1}
        if bad:
            raise ConfigError(f"task channel counts must be positive, got {bad}")

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.bottleneck(self.encoder(image))
        size = image.shape[-2:]
        return {task: head(features, size) for task, head in self.heads.items()}

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.bottleneck.parameters()]

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The convolution(s) that make the shared representation the heads read.

        ASPP with ``project=True``: its 1×1 projection. ASPP without: its five parallel branch
        convolutions (1×1, three dilated 3×3, image pooling), whose concatenated outputs are the
        representation Kendall et al. share. No bottleneck: the encoder's last convolution.
        """
        bottleneck = self.bottleneck
        if isinstance(bottleneck, ASPP) and not _has_parameters(bottleneck.project):
            return [_last_convolution(branch).weight for branch in bottleneck.branches]
        shared = bottleneck if _has_parameters(bottleneck) else self.encoder
        return [_last_convolution(shared).weight]


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _last_convolution(module: nn.Module) -> nn.Conv2d:
    """The last ``Conv2d`` registered in ``module`` (registration follows the data flow in our
    bottlenecks and in the encoders' stages)."""
    convolutions = [child for child in module.modules() if isinstance(child, nn.Conv2d)]
    if not convolutions:
        raise ValueError(f"{type(module).__name__} has no convolution")
    return convolutions[-1]
