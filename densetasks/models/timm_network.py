"""A timm network as densetasks reads it, before and around building an encoder from it.

Any name that timm knows is an encoder. :func:`describe` checks the name (an unknown one is a
:class:`ConfigError` with timm's close matches) and the ``model.encoder_options`` (timm model
keyword arguments such as ``drop_path_rate`` or ``img_size``, checked against the network's
signature by building it on the ``meta`` device, which allocates nothing), and returns that
meta network. From it and the built feature extractor come:

* :func:`timm_keys`: each state-dict key of the feature extractor as the full timm network
  names it (``features_only`` wrappers rename and prune modules), so that a timm checkpoint
  loads strictly and timm's own parameter grouping applies;
* :func:`layer_ids`: the depth of every parameter for layer-wise learning-rate decay, from
  timm's ``group_matcher`` (stem 0, then every block, as BEiT counts them);
* :func:`no_weight_decay`: the parameters timm's ``no_weight_decay()`` names (position
  embeddings, tokens, relative position tables);
* :func:`hub_error`: what to download, and where, when the hub is out of reach.
"""

import difflib
import fnmatch
import inspect
import os
from collections.abc import Mapping
from typing import Any

import timm
import torch
from timm.models import create_model, group_parameters
from torch import nn

from densetasks.errors import ConfigError
from densetasks.models.base import Encoder

SIZE_FREE_DEFAULTS: dict[str, Any] = {"dynamic_img_size": True, "dynamic_img_pad": True}
"""Options densetasks sets when a network takes them and the config does not: transformers
then accept any input size (position embeddings interpolated, input padded to the patch size)
instead of only their pre-training size."""

FEATURE_OPTIONS = frozenset({"out_indices"})
"""``encoder_options`` that choose features (timm's ``features_only`` argument) rather than
build the network."""


def unknown_name(name: str, own: list[str]) -> ConfigError:
    """The error for a name timm does not know: densetasks's own encoders and timm's closest
    names."""
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    return ConfigError(
        f"unknown encoder {name!r}; known: {', '.join(own)}, or any of timm's "
        f"{len(timm.list_models())} networks by name"
        + (f"; close matches: {', '.join(close)}" if close else "")
    )


def describe(name: str, options: Mapping[str, Any]) -> nn.Module:
    """The full timm network ``name`` built on the meta device with ``options`` (feature
    options aside), or a :class:`ConfigError` naming the options it does not take."""
    model_options = {key: value for key, value in options.items() if key not in FEATURE_OPTIONS}
    try:
        with torch.device("meta"):
            return create_model(name, **model_options)
    except TypeError as error:
        if "unexpected keyword argument" not in str(error):
            raise
        with torch.device("meta"):
            plain = create_model(name)
        taken = accepted_options(plain)
        unknown = sorted(set(model_options) - taken)
        raise ConfigError(
            f"model.encoder_options: encoder {name!r} (timm {type(plain).__name__}) does not "
            f"take option(s) {unknown or list(model_options)}; it takes: "
            f"{', '.join(sorted(taken | FEATURE_OPTIONS))}"
        ) from None


def accepted_options(model: nn.Module) -> set[str]:
    """Keyword arguments of the network's class (the ones a config may set)."""
    parameters = inspect.signature(type(model).__init__).parameters
    return {
        key
        for key, parameter in parameters.items()
        if key not in ("self", "device", "dtype")
        and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }


def with_size_defaults(full: nn.Module, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` plus :data:`SIZE_FREE_DEFAULTS` that the network takes and ``options``
    does not set."""
    taken = accepted_options(full)
    defaults = {key: value for key, value in SIZE_FREE_DEFAULTS.items() if key in taken}
    return {**defaults, **options}


def single_stride(full: nn.Module) -> bool:
    """Whether every feature the network declares has the same stride (a plain ViT)."""
    reductions = {info["reduction"] for info in full.feature_info}
    return len(reductions) == 1


def _flat(key: str) -> str:
    return key.replace(".", "_")


def timm_keys(features: nn.Module, full: nn.Module) -> dict[str, str]:
    """``{feature extractor key: full network key}`` for every state-dict entry.

    timm's feature extractors keep the full network's modules in its order (``features_only``
    wrappers flatten ``stages.0`` into ``stages_0`` and drop or prune the modules after the
    last feature), so the keys pair up in order once dots and underscores are treated alike.
    """
    full_keys = list(full.state_dict())
    mapping: dict[str, str] = {}
    position = 0
    for key in features.state_dict():
        while position < len(full_keys) and _flat(full_keys[position]) != _flat(key):
            position += 1
        if position == len(full_keys):
            raise RuntimeError(f"{key!r} of the feature extractor is not in the timm network")
        mapping[key] = full_keys[position]
        position += 1
    return mapping


def layer_ids(features: nn.Module, full: nn.Module) -> tuple[dict[str, int], int]:
    """``({parameter name in features: depth}, top)`` from timm's ``group_matcher`` on the
    full network: 0 is the stem (patch embedding, position embedding, tokens), then one per
    block, and ``top`` the last group (the final norm; what sits above the encoder, the
    decoders, counts as ``top`` too). Bao et al. (BEiT, ICLR 2022) number ViT layers this way
    for layer-wise learning-rate decay."""
    if not hasattr(full, "group_matcher"):
        raise ConfigError(
            f"timm {type(full).__name__} has no group_matcher: its layers are unknown, so "
            "layer-wise learning-rate decay (train.layer_decay) cannot apply"
        )
    groups = group_parameters(full, full.group_matcher(coarse=False), reverse=True)
    top = max(groups.values())
    names = timm_keys(features, full)
    own = {name for name, _ in features.named_parameters()}
    return {key: groups.get(names[key], top) for key in own}, top


def no_weight_decay(features: nn.Module, full: nn.Module) -> set[str]:
    """Parameters of ``features`` that timm's ``no_weight_decay()`` names (patterns allowed)."""
    if not hasattr(full, "no_weight_decay"):
        return set()
    patterns = list(full.no_weight_decay())
    names = timm_keys(features, full)
    return {
        key
        for key, _ in features.named_parameters()
        if any(fnmatch.fnmatch(names[key], pattern) for pattern in patterns)
    }


def hub_error(name: str, full: nn.Module, error: Exception) -> ConfigError:
    """``pretrained: true`` without the network: which file to fetch and where it goes."""
    config = full.pretrained_cfg
    hub_id = config.get("hf_hub_id")
    if hub_id:
        from huggingface_hub.constants import HF_HUB_CACHE

        where = (
            f"fetch https://huggingface.co/{hub_id} (model.safetensors) on a machine with the "
            f"network, e.g. `hf download {hub_id}`, into the Hugging Face cache "
            f"{HF_HUB_CACHE} (HF_HOME moves it; copy the cache folder models--"
            f"{hub_id.replace('/', '--')} over)"
        )
    elif config.get("url"):
        where = (
            f"fetch {config['url']} into torch's hub cache "
            f"{os.path.join(torch.hub.get_dir(), 'checkpoints')} (TORCH_HOME moves it)"
        )
    else:
        where = "timm names no source for its weights"
    return ConfigError(
        f"encoder {name!r}: cannot download timm's pretrained weights "
        f"{config.get('architecture', name)}.{config.get('tag', '')} ({error}); {where}; "
        "or pass the path of a local weights file as pretrained instead"
    )


class TimmNetworkEncoder(Encoder):
    """An encoder around a timm network kept as ``self.model``: the layer numbering
    (``train.layer_decay``) and the parameters without weight decay (``train.selective_decay``)
    read from the full network ``full`` by :meth:`read_training_practice`."""

    model: nn.Module

    def read_training_practice(self, full: nn.Module) -> None:
        self._layers = layer_ids(self.model, full) if hasattr(full, "group_matcher") else None
        self._no_weight_decay = no_weight_decay(self.model, full)

    def parameter_layers(self) -> tuple[dict[str, int], int]:
        if self._layers is None:
            return super().parameter_layers()
        ids, top = self._layers
        return {f"model.{key}": depth for key, depth in ids.items()}, top

    def no_weight_decay(self) -> set[str]:
        return {f"model.{key}" for key in self._no_weight_decay}
