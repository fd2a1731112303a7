"""The model contract: encoder features with ``(channels, stride)``, architectures -> dict.

An architecture knows tasks only by name and channel count. ``forward(image)`` returns
``{task_name: [B, C_t, H, W]}`` at the input resolution, plus auxiliary outputs under keys
``"<task>@<tag>"`` (any resolution; the engine resizes them to the label and adds
``aux_weights[tag] * task.loss(...)`` to that task's loss). Models compute no loss.
"""

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureSpec:
    """One encoder feature map: its channel count and its stride w.r.t. the input."""

    channels: int
    stride: int


class Encoder(nn.Module, metaclass=ABCMeta):
    """Returns a list of feature maps, shallow to deep, described by :attr:`feature_info`."""

    feature_info: list[FeatureSpec]

    @abstractmethod
    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps, shallow to deep, as :attr:`feature_info` describes them."""


class Architecture(nn.Module, metaclass=ABCMeta):
    """Base of every multi-task architecture (single task, hard sharing, ...)."""

    aux_weights: dict[str, float] = {}
    """Weight of each auxiliary output tag in its task's loss."""

    def __init__(self, task_channels: dict[str, int]) -> None:
        super().__init__()
        self.task_channels = dict(task_channels)

    @abstractmethod
    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the (pre-trainable) encoder: their own learning rate group."""

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Everything else (bottleneck, decoders, heads)."""
        encoder = {id(p) for p in self.encoder_parameters()}
        return [p for p in self.parameters() if id(p) not in encoder]

    @abstractmethod
    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters that every task's loss reaches (gradient-based balancers use them)."""
