"""What every encoder shares: output strides, stage ranges, the pretrained argument, and the
strict loading of a weights file into a module."""

from collections.abc import Mapping
from pathlib import Path

import torch
from timm.models import load_state_dict
from torch import nn

from densetasks.errors import ConfigError

OUTPUT_STRIDES = (8, 16, 32)
"""Output strides an encoder can be asked for: 32 is the plain network, 8 and 16 dilate."""

Pretrained = bool | str | Path
"""``False``, ``True`` (hub weights) or the path of a local weights file."""


def check_output_stride(output_stride: int) -> None:
    if output_stride not in OUTPUT_STRIDES:
        raise ConfigError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")


def stage_end(start: int, end: int | None, stages: int) -> int:
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


def read_weights_file(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (``.pth``/``.bin`` through ``torch.load(weights_only=True)``,
    ``.safetensors``; a checkpoint holding it under ``state_dict`` / ``model`` too).

    An absent or unreadable file is a :class:`ConfigError` naming it and ``what`` it is for.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pretrained weights file {str(path)!r} for {what} does not exist")
    try:
        return load_state_dict(str(path), weights_only=True)
    except Exception as error:  # torch / safetensors raise many unrelated types for bad files
        raise ConfigError(
            f"cannot read pretrained weights file {str(path)!r} for {what}: {error}"
        ) from error


def load_checked(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    path: str | Path,
    what: str,
    ignored: frozenset[str] = frozenset(),
    names: Mapping[str, str] | None = None,
) -> None:
    """Load ``state_dict`` into ``module`` strictly, except for the keys in ``ignored`` (those
    of modules the encoder does not have, such as a classifier head).

    ``names`` maps each key of ``module`` to its key in the file (a timm feature extractor's
    ``stages_0`` is the network's ``stages.0``); by default they are the same. Any missing key,
    unexpected key or shape mismatch raises :class:`ConfigError` naming the file (``path``),
    ``what`` it was for and the keys as the file names them.
    """
    own_state = module.state_dict()
    own_key = (
        {key: key for key in own_state} if names is None else {names[key]: key for key in own_state}
    )
    state_dict = {key: value for key, value in state_dict.items() if key not in ignored}
    missing = sorted(set(own_key) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own_key))
    mismatched = sorted(
        f"{key} {tuple(value.shape)} != {tuple(own_state[own_key[key]].shape)}"
        for key, value in state_dict.items()
        if key in own_key and value.shape != own_state[own_key[key]].shape
    )
    if missing or unexpected or mismatched:
        raise ConfigError(
            f"pretrained weights file {str(path)!r} does not fit {what}: "
            f"missing keys {shorten(missing)}, unexpected keys {shorten(unexpected)}, "
            f"shape mismatches {shorten(mismatched)}"
        )
    module.load_state_dict({own_key[key]: value for key, value in state_dict.items()})


def shorten(keys: list[str], limit: int = 8) -> str:
    """At most ``limit`` keys, then how many more: error messages stay one readable line."""
    shown = ", ".join(keys[:limit])
    more = len(keys) - limit
    return f"[{shown}{f', ... ({more} more)' if more > 0 else ''}]"


def stage_blocks(module: nn.Module) -> list[nn.Module]:
    """``module`` as the blocks it runs in order: a ``nn.Sequential`` as its children (a ResNet
    layer's residual blocks, a MobileNetV3 group's inverted residuals); a timm stage made of a
    ``downsample`` and a ``blocks`` sequence (ConvNeXt, Swin), whose forward runs them in that
    order, as the downsample and the blocks; any other module as one block."""
    if isinstance(module, nn.Sequential):
        return list(module)
    blocks = getattr(module, "blocks", None)
    if isinstance(blocks, nn.Sequential) and set(dict(module.named_children())) == {
        "downsample",
        "blocks",
    }:
        return [module.downsample, *blocks]
    return [module]


def run_split(modules: list[nn.Module], inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``modules`` (a stage) on ``inputs``; return the feature before its last block and
    the output, blocks as :func:`stage_blocks` finds them. The last block runs on a copy: an
    in-place activation there would overwrite the feature returned."""
    blocks = [block for module in modules for block in stage_blocks(module)]
    for block in blocks[:-1]:
        inputs = block(inputs)
    return inputs, blocks[-1](inputs.clone())
