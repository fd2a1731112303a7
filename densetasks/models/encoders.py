"""Encoders: timm backbones with ``features_only`` and a tiny conv net for tests.

Every encoder returns its feature maps shallow to deep (never the input image) and describes
them in :attr:`~densetasks.models.base.Encoder.feature_info` as ``(channels, stride)``.
The deepest stride is the *output stride*: 8, 16 or 32. Below 32 the last stages keep their
resolution and dilate their convolutions instead (DeepLab practice; Kendall et al., CVPR 2018,
use a ResNet-101 at output stride 8, App. A).

``pretrained`` is ``False`` (random init), ``True`` (timm hub weights, needs the network) or
the path of a local weights file: a state dict of the timm network as timm distributes it
(``.pth``/``.bin`` read with ``torch.load(weights_only=True)``, or ``.safetensors``). Keys of
the classification head, which ``features_only`` drops, are ignored; any other missing or
unexpected key is an error that names the file and the keys.

Every encoder also runs any contiguous range of its stages (``forward_stages``), so that an
architecture can share the first stages and branch after them. A timm encoder splits the timm
network into stages by module *names*, resolved at call time: its state dict keys stay those
of the timm network, and a module replaced later (``SyncBatchNorm`` conversion) is the one run.
"""

from functools import partial
from pathlib import Path

import timm
import torch
from timm.models import FeatureListNet, MobileNetV3Features, load_state_dict
from torch import nn

from densetasks._registry import Registry
from densetasks.errors import ConfigError
from densetasks.models.base import Encoder, FeatureSpec

OUTPUT_STRIDES = (8, 16, 32)
"""Output strides every encoder supports: 32 is the plain network, 8 and 16 dilate."""

Pretrained = bool | str | Path
"""``False``, ``True`` (hub weights) or the path of a local weights file."""


def _check_output_stride(output_stride: int) -> None:
    if output_stride not in OUTPUT_STRIDES:
        raise ConfigError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")


def _stage_end(start: int, end: int | None, stages: int) -> int:
    """``end`` resolved (``None``: the last stage); a range outside ``0 <= start < end <=
    stages`` raises :class:`ValueError` naming it, since an empty or partial range would
    silently return fewer features than the caller indexes."""
    resolved = stages if end is None else end
    if not 0 <= start < resolved <= stages:
        raise ValueError(
            f"invalid stage range start={start}, end={end}: need 0 <= start < end <= {stages} "
            f"(the encoder has {stages} stages)"
        )
    return resolved


def _split_after(names: list[str], ends: list[int]) -> list[tuple[str, ...]]:
    """``names`` cut into consecutive groups, group ``k`` ending before ``names[ends[k]]``."""
    return [tuple(names[begin:end]) for begin, end in zip([0, *ends[:-1]], ends, strict=True)]


def _feature_list_stages(model: FeatureListNet) -> list[tuple[str, ...]]:
    """Stages of a ResNet-like ``FeatureListNet``: its children in order, each stage ending
    at a returned layer (``return_layers``), exactly as its own forward runs them."""
    names = list(model.keys())
    return _split_after(names, [names.index(name) + 1 for name in model.return_layers])


def _mobilenetv3_stages(model: MobileNetV3Features) -> list[tuple[str, ...]]:
    """Stages of ``MobileNetV3Features``: the stem, then its blocks, a stage ending after the
    ``n`` blocks named by each key ``n`` of ``_stage_out_idx`` (0: the stem's output itself);
    blocks after the last returned one are never run, as they feed no feature."""
    stem = ["conv_stem", "bn1", "act1"]
    names = stem + [f"blocks.{index}" for index in range(len(model.blocks))]
    return _split_after(names, [len(stem) + blocks for blocks in sorted(model._stage_out_idx)])


def _timm_stages(model: nn.Module, name: str) -> list[tuple[str, ...]]:
    """Module names of each stage of a timm ``features_only`` network, shallow to deep."""
    if isinstance(model, FeatureListNet):
        return _feature_list_stages(model)
    if isinstance(model, MobileNetV3Features) and model.feature_hooks is None:
        return _mobilenetv3_stages(model)
    raise ConfigError(
        f"encoder {name!r}: timm feature extractor {type(model).__name__} cannot be split into "
        "stages; supported: FeatureListNet (ResNets), MobileNetV3Features"
    )


def _run_split(modules: list[nn.Module], inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``modules`` (a stage) on ``inputs``; return the feature before its last block and
    the output. A ``nn.Sequential`` counts as its children (a ResNet layer's residual blocks,
    a MobileNetV3 group's inverted residuals), any other module as one block. The last block
    runs on a copy: an in-place activation there would overwrite the feature returned."""
    blocks = [
        block
        for module in modules
        for block in (module if isinstance(module, nn.Sequential) else [module])
    ]
    for block in blocks[:-1]:
        inputs = block(inputs)
    return inputs, blocks[-1](inputs.clone())


def load_weights_file(module: nn.Module, path: str | Path, what: str) -> None:
    """Load the state dict in ``path`` into ``module``, failing with the keys that differ.

    Unexpected keys whose top-level module does not exist in ``module`` (a classifier head
    that ``features_only`` removed) are ignored; every other mismatch raises
    :class:`ConfigError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pretrained weights file {str(path)!r} for {what} does not exist")
    try:
        state_dict = load_state_dict(str(path), weights_only=True)
    except Exception as error:  # torch / safetensors raise many unrelated types for bad files
        raise ConfigError(
            f"cannot read pretrained weights file {str(path)!r} for {what}: {error}"
        ) from error
    own_modules = {name for name, _ in module.named_children()}
    state_dict = {
        key: value for key, value in state_dict.items() if key.split(".")[0] in own_modules
    }
    own_state = module.state_dict()
    missing = sorted(set(own_state) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own_state))
    mismatched = sorted(
        f"{key} {tuple(value.shape)} != {tuple(own_state[key].shape)}"
        for key, value in state_dict.items()
        if key in own_state and value.shape != own_state[key].shape
    )
    if missing or unexpected or mismatched:
        raise ConfigError(
            f"pretrained weights file {str(path)!r} does not fit {what}: "
            f"missing keys {_shorten(missing)}, unexpected keys {_shorten(unexpected)}, "
            f"shape mismatches {_shorten(mismatched)}"
        )
    module.load_state_dict(state_dict)


def _shorten(keys: list[str], limit: int = 8) -> str:
    """At most ``limit`` keys, then how many more: error messages stay one readable line."""
    shown = ", ".join(keys[:limit])
    more = len(keys) - limit
    return f"[{shown}{f', ... ({more} more)' if more > 0 else ''}]"


class TimmEncoder(Encoder):
    """A timm backbone created with ``features_only=True`` and an output stride."""

    def __init__(self, name: str, pretrained: Pretrained = False, output_stride: int = 32) -> None:
        super().__init__()
        _check_output_stride(output_stride)
        hub_weights = pretrained is True
        try:
            self.model = timm.create_model(
                name, pretrained=hub_weights, features_only=True, output_stride=output_stride
            )
        except OSError as error:
            raise ConfigError(
                f"cannot download pretrained weights for encoder {name!r} ({error}); "
                "pass the path of a local weights file as pretrained instead"
            ) from error
        if pretrained is not False and not hub_weights:
            load_weights_file(self.model, pretrained, f"encoder {name!r}")
        self.feature_info = [
            FeatureSpec(channels, stride)
            for channels, stride in zip(
                self.model.feature_info.channels(), self.model.feature_info.reduction(), strict=True
            )
        ]
        self._stage_modules = _timm_stages(self.model, name)

    def forward_stages(
        self, inputs: torch.Tensor, start: int = 0, end: int | None = None
    ) -> list[torch.Tensor]:
        """Run stages ``start .. end - 1`` on ``inputs`` (see :class:`Encoder`)."""
        end = _stage_end(start, end, len(self.feature_info))
        features = []
        for names in self._stage_modules[start:end]:
            for module_name in names:
                inputs = self.model.get_submodule(module_name)(inputs)
            features.append(inputs)
        return features

    def forward_stage_blocks(
        self, inputs: torch.Tensor, stage: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage ``stage``'s feature before its last block and its output (see
        :class:`~densetasks.models.base.Encoder`)."""
        _stage_end(stage, stage + 1, len(self.feature_info))
        names = self._stage_modules[stage]
        return _run_split([self.model.get_submodule(name) for name in names], inputs)


class TinyEncoder(Encoder):
    """Five conv-BN-ReLU stages (strides 2 to 32, a few thousand parameters) for fast tests.

    It follows the same output-stride rule as the timm ResNets: a stage that would go below
    the output stride keeps stride 1 and doubles the dilation instead.
    """

    WIDTHS = (8, 8, 16, 16, 32)

    def __init__(self, pretrained: Pretrained = False, output_stride: int = 32) -> None:
        super().__init__()
        _check_output_stride(output_stride)
        if pretrained is True:
            raise ConfigError("encoder 'tiny' has no hub weights; pass a local weights file")
        stages, specs = [], []
        in_channels, stride, dilation = 3, 1, 1
        for width in self.WIDTHS:
            if stride * 2 <= output_stride:
                stride, step = stride * 2, 2
            else:
                dilation, step = dilation * 2, 1
            stages.append(
                nn.Sequential(
                    nn.Conv2d(
                        in_channels,
                        width,
                        3,
                        stride=step,
                        padding=dilation,
                        dilation=dilation,
                        bias=False,
                    ),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                )
            )
            specs.append(FeatureSpec(width, stride))
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.feature_info = specs
        if pretrained is not False:
            load_weights_file(self, pretrained, "encoder 'tiny'")

    def forward_stages(
        self, inputs: torch.Tensor, start: int = 0, end: int | None = None
    ) -> list[torch.Tensor]:
        """Run stages ``start .. end - 1`` on ``inputs`` (see :class:`Encoder`)."""
        end = _stage_end(start, end, len(self.feature_info))
        features = []
        for stage in self.stages[start:end]:
            inputs = stage(inputs)
            features.append(inputs)
        return features

    def forward_stage_blocks(
        self, inputs: torch.Tensor, stage: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage ``stage``'s conv + BN output (before its last block, the ReLU) and its output."""
        _stage_end(stage, stage + 1, len(self.feature_info))
        return _run_split([self.stages[stage]], inputs)


ENCODERS: Registry[Encoder] = Registry("encoder")
"""Encoder name -> ``factory(pretrained=..., output_stride=...)``."""

TIMM_ENCODERS = (
    "test_resnet",  # timm's ~0.4M-parameter ResNet: the real timm path, fast enough for tests
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "mobilenetv3_large_100",
    "mobilenetv3_small_100",
)
"""timm networks registered under their timm names."""

ENCODERS.register("tiny", TinyEncoder)
for timm_name in TIMM_ENCODERS:
    ENCODERS.register(timm_name, partial(TimmEncoder, timm_name))


def create_encoder(name: str, pretrained: Pretrained = False, output_stride: int = 32) -> Encoder:
    """The registered encoder ``name``; unknown names raise :class:`ConfigError`. The encoder
    remembers how it was built (:meth:`Encoder.rebuild`)."""
    encoder = ENCODERS.get(name)(pretrained=pretrained, output_stride=output_stride)
    encoder.factory = partial(create_encoder, name, pretrained, output_stride)
    return encoder
