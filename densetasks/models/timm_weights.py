"""A local timm checkpoint of any family loaded strictly into a timm feature extractor.

The file holds the *full* timm network's state dict as timm distributes it
(``model.safetensors``, ``pytorch_model.bin`` / ``.pth``; ``.npz`` for the networks timm reads
NumPy checkpoints into, the ViTs of Google's big_vision). It passes through the family's own
``checkpoint_filter_fn`` first, as timm's loader does (original-repository key names,
position embeddings resampled to the configured ``img_size``), then its keys are matched to
the feature extractor's (:func:`~densetasks.models.timm_network.timm_keys`). Keys of modules
the extractor does not have (the classifier, blocks after the last feature) are ignored; any
other missing or unexpected key or shape mismatch is a :class:`ConfigError` naming the file.
"""

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import model_entrypoint, split_model_name_tag
from torch import nn

from densetasks.errors import ConfigError
from densetasks.models._encoder_tools import load_checked, read_weights_file
from densetasks.models.timm_network import FEATURE_OPTIONS, timm_keys


def load_timm_weights(
    features: nn.Module,
    full: nn.Module,
    name: str,
    options: Mapping[str, Any],
    path: str | Path,
) -> None:
    """Load the timm checkpoint ``path`` of network ``name`` (built with ``options``; ``full``
    is that network on the meta device) into its feature extractor ``features``."""
    path = Path(path)
    what = f"encoder {name!r}"
    if path.suffix.lower() == ".npz":
        state_dict = _read_npz(name, options, path, what)
    else:
        state_dict = read_weights_file(path, what)
        family_filter = _checkpoint_filter(name)
        if family_filter is not None:
            state_dict = family_filter(state_dict, full)
    names = timm_keys(features, full)
    unused = frozenset(full.state_dict()) - set(names.values())
    load_checked(features, state_dict, path, what, ignored=unused, names=names)


def _checkpoint_filter(name: str) -> Any:
    """The ``checkpoint_filter_fn(state_dict, model)`` of the timm module defining ``name``,
    or ``None`` for families whose checkpoints need none."""
    module = sys.modules[model_entrypoint(split_model_name_tag(name)[0]).__module__]
    return getattr(module, "checkpoint_filter_fn", None)


def _read_npz(name: str, options: Mapping[str, Any], path: Path, what: str) -> dict:
    """The state dict timm's ``load_pretrained`` makes of a NumPy checkpoint (a full network
    is built on the CPU to read it into)."""
    model_options = {key: value for key, value in options.items() if key not in FEATURE_OPTIONS}
    network = timm.create_model(name, **model_options)
    if not hasattr(network, "load_pretrained"):
        raise ConfigError(
            f"pretrained weights file {str(path)!r} for {what}: timm reads .npz checkpoints "
            f"only into networks with load_pretrained (the ViTs), not {type(network).__name__}"
        )
    try:
        with torch.no_grad():
            network.load_pretrained(str(path))
    except Exception as error:  # numpy and timm raise KeyError, ValueError, OSError, ...
        raise ConfigError(
            f"cannot read pretrained weights file {str(path)!r} for {what}: {error!r}"
        ) from error
    return network.state_dict()
