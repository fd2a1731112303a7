"""Atomic checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts only, so loading
one cannot run code. Random-number states (torch, CUDA, NumPy, Python) are converted to
tensors and lists for the same reason. Writes go to a temporary file in the target folder
and are renamed over the target with ``os.replace``, so a killed run never leaves a half
written ``last.pt``.
"""

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densetasks.errors import DataError

CHECKPOINT_FORMAT = 1
"""Version of the checkpoint payload (``step``, ``model``, ``optimizer``, ..., ``config``,
``task_options``); :func:`load_checkpoint` refuses any other with a clear error."""


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` stamped with :data:`CHECKPOINT_FORMAT` to ``path`` atomically (temp
    file in the same folder + rename)."""
    payload = {**payload, "format": CHECKPOINT_FORMAT}
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) onto the CPU and check its format."""
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise DataError(f"checkpoint {path} cannot be read safely: {error}") from None
    version = payload.get("format") if isinstance(payload, dict) else None
    if version != CHECKPOINT_FORMAT:
        raise DataError(
            f"checkpoint {path} has format {version!r}; this densetasks reads format "
            f"{CHECKPOINT_FORMAT} (it was written by another version, or is not a densetasks "
            "checkpoint)"
        )
    return payload


def load_matching_weights(model: torch.nn.Module, run_dir: Path) -> tuple[list[str], list[str]]:
    """Initialise ``model`` from the best checkpoint of another run: every weight whose name
    and shape match is loaded; returns ``(loaded, skipped)`` parameter names.

    Weights of the same name but another shape (another encoder, other task channels) are a
    :class:`DataError` naming them, and so is a checkpoint that shares no weight at all with
    the model: both mean the run is not a starting point for this one.
    """
    source = load_checkpoint(Path(run_dir) / "checkpoints" / "best.pt")["model"]
    own = model.state_dict()
    mismatched = [
        f"{key} {tuple(value.shape)} != {tuple(own[key].shape)}"
        for key, value in source.items()
        if key in own and value.shape != own[key].shape
    ]
    if mismatched:
        shown = ", ".join(mismatched[:6]) + (
            f", ... ({len(mismatched) - 6} more)" if len(mismatched) > 6 else ""
        )
        raise DataError(f"model.init_from {run_dir}: weights of another shape: {shown}")
    loaded = sorted(key for key in source if key in own)
    if not loaded:
        raise DataError(f"model.init_from {run_dir}: its model shares no weight with this one")
    model.load_state_dict({**own, **{key: source[key] for key in loaded}})
    return loaded, sorted(key for key in own if key not in source)


def capture_rng_states() -> dict[str, Any]:
    """Every global random state as tensors / lists (safe to load)."""
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gauss": float(cached_gauss),
        },
        "python": {"version": version, "state": list(python_state), "gauss": python_gauss},
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_states`."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    numpy_state = states["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gauss"],
        )
    )
    python_state = states["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss"]))
