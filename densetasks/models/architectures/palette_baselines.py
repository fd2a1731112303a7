"""The baselines of CompositeTasking (Popovic et al., CVPR 2021, Sec. 5.2; authors' code).

All three use the CTN's encoder and its decoder with plain affine BatchNorm instead of task
composition (:class:`~densetasks.models.composite_blocks.CompositionDecoder` without an
embedding), ending, like the CTN, in the 3-channel output space that each task reads with
``Task.from_composite`` ("each network has the same architecture as the CompositeTasking
network"; the authors' decoders all output 3 channels). The Task Palette does not enter the
network: it only says where each task is supervised and scored (:class:`PaletteMaskAdapter`),
so each baseline trains and evaluates under any palette rule.

* ``composite_stn`` (:class:`STN`): one network for one task; train one per task.
* ``composite_mhn`` (:class:`MHN`): a shared encoder and one full decoder per task.
* ``composite_mn`` (:class:`MN`): one encoder and one decoder per task in one model.
"""

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from densetasks.errors import ConfigError
from densetasks.models.adapters import PaletteMaskAdapter
from densetasks.models.architectures.composite_tasking import PALETTE, PaletteArchitecture
from densetasks.models.base import Encoder, FeatureSpec
from densetasks.models.composite_blocks import DECODER_WIDTHS, CompositionDecoder


class _PaletteBaseline(PaletteArchitecture):
    """Options, palette-mask adapter and encoder/decoder factories shared by the baselines.

    ``train_rule=None`` takes the architecture's default (:attr:`DEFAULT_TRAIN_RULE`: S for
    the STN, R1r otherwise). ``palette_tasks`` lists the tasks that palette ids refer to when
    the palette is drawn over more tasks than this model predicts (an STN trained under R1r
    over all five tasks is supervised only where the palette gives its task); by default the
    model's own tasks. The other options are the CTN's.
    """

    DEFAULT_TRAIN_RULE = "R1r"

    def __init__(
        self,
        task_channels: dict[str, int],
        encoder: Encoder,
        train_rule: str | None = None,
        train_rule_options: Mapping[str, Any] | None = None,
        eval_rules: Sequence[str] = ("R1r",),
        eval_rule_options: Mapping[str, Mapping[str, Any]] | None = None,
        palette_tasks: Sequence[str] | None = None,
        decoder_widths: Sequence[int] = DECODER_WIDTHS,
        seed: int = 0,
    ) -> None:
        self.check_tasks(task_channels)
        super().__init__(
            task_channels,
            train_rule or self.DEFAULT_TRAIN_RULE,
            train_rule_options,
            eval_rules,
            eval_rule_options,
            seed,
            palette_tasks,
        )
        ids = {task: self.palette_tasks.index(task) for task in task_channels}
        self.output_adapter = PaletteMaskAdapter(decode_composite=True, palette=PALETTE, ids=ids)
        self.decoder_widths = tuple(decoder_widths)
        self.build(encoder)

    @classmethod
    def check_tasks(cls, task_channels: dict[str, int]) -> None:
        """Raise :class:`ConfigError` unless the tasks suit this architecture (any number)."""

    @abstractmethod
    def build(self, encoder: Encoder) -> None:
        """Create the decoders around ``encoder`` (and the further encoders, if any)."""

    def new_decoder(self, feature_info: Sequence[FeatureSpec]) -> CompositionDecoder:
        """The CTN decoder with plain BatchNorm (no task conditioning), 3 output channels."""
        return CompositionDecoder(feature_info, None, self.decoder_widths)


class MHN(_PaletteBaseline):
    """Multi-head network: a shared encoder, one full plain decoder per task (Sec. 5.2).

    ``forward(image, palette=None) -> {task: raw composite [B, 3, H, W]}``; the palette is
    not used by the network (the adapter masks the losses with it).
    """

    def build(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.decoders = nn.ModuleDict(
            {task: self.new_decoder(self.encoder.feature_info) for task in self.task_channels}
        )

    def forward(
        self, image: torch.Tensor, palette: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        features = self.encoder(image)
        return {task: decoder(image, features) for task, decoder in self.decoders.items()}

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())


class MN(_PaletteBaseline):
    """Multi-network: one encoder and one plain decoder per task, nothing shared (authors'
    code, ``multi_net``); ``forward`` as :class:`MHN`. ``shared_parameters()`` is empty
    unless there is one task."""

    def build(self, encoder: Encoder) -> None:
        """The first task takes ``encoder``, every other task an encoder built the same way
        (:meth:`Encoder.rebuild`: fresh random weights, or the same pretrained ones)."""
        first, *others = self.task_channels
        self.encoders = nn.ModuleDict(
            {first: encoder, **{task: encoder.rebuild() for task in others}}
        )
        self.decoders = nn.ModuleDict(
            {name: self.new_decoder(net.feature_info) for name, net in self.encoders.items()}
        )

    def forward(
        self, image: torch.Tensor, palette: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        return {
            task: self.decoders[task](image, encoder(image))
            for task, encoder in self.encoders.items()
        }

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoders.parameters())

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters()) if len(self.task_channels) == 1 else []


class STN(MN):
    """Single-task network: the CTN with plain BatchNorm for exactly one task (Sec. 5.2).

    Trained by default under rule S (its task on every pixel); with ``palette_tasks`` set to
    the full task list and a multi-task rule it is supervised only where the palette asks
    for its task, as in the paper's R1r / R2 rows.
    """

    DEFAULT_TRAIN_RULE = "S"

    @classmethod
    def check_tasks(cls, task_channels: dict[str, int]) -> None:
        if len(task_channels) != 1:
            raise ConfigError(
                "architecture 'composite_stn' predicts exactly one task, "
                f"got {sorted(task_channels)}; train one composite_stn per task or use "
                "composite_mhn / composite_mn"
            )
