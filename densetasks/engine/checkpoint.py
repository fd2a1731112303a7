"""Checkpoints that load with ``torch.load(weights_only=True)``, survive a crash mid-write
and are checked when they are read.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts only, so loading
one cannot run code. Random-number states (torch, CUDA, NumPy, Python) are converted to
tensors and lists for the same reason.

Writing (:func:`save_checkpoint`): the payload goes to a temporary file in the target folder,
is flushed to the disk (``fsync``) and hashed, then renamed over the target (``os.replace``),
so a killed run never leaves a half-written checkpoint. Beside each checkpoint its *record*
``<name>.pt.json`` holds its size and SHA-256. With ``keep_previous`` (the engine's
``last.pt``) the checkpoint being replaced is first kept as ``<name>.prev.pt`` if it matches
its record. The renames are ordered so that at every moment each checkpoint file is complete
and has its own record or none. A full disk raises
:class:`~densetasks.errors.DiskFullError` naming the file and its size before anything is
replaced.

Reading (:func:`load_checkpoint`): a checkpoint whose size or SHA-256 differs from its record
(a torn write, a bit flip), or that torch cannot read, is *damaged*; the previous one
(``<name>.prev.pt``) is read instead, with a one-line
:class:`~densetasks.errors.DenseTasksWarning`. A checkpoint without a record (one written
before records existed, or caught between two renames) is read as it is.
"""

import errno
import hashlib
import json
import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densetasks.data.io import no_room_error, write_json
from densetasks.errors import DataError, DenseTasksWarning

CHECKPOINT_FORMAT = 1
"""Version of the checkpoint payload (``step``, ``model``, ``optimizer``, ..., ``config``,
``task_options``); :func:`load_checkpoint` refuses any other with a clear error."""


def record_path(path: Path) -> Path:
    """``last.pt`` -> ``last.pt.json``: the checkpoint's size and SHA-256."""
    return path.with_name(f"{path.name}.json")


def previous_path(path: Path) -> Path:
    """``last.pt`` -> ``last.prev.pt``: the checkpoint that ``path`` replaced."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(payload: dict[str, Any], path: Path, keep_previous: bool = False) -> None:
    """Write ``payload`` stamped with :data:`CHECKPOINT_FORMAT` to ``path`` atomically, with
    its record; with ``keep_previous`` an intact checkpoint at ``path`` becomes
    :func:`previous_path`."""
    payload = {**payload, "format": CHECKPOINT_FORMAT}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _write_temporary(payload, path)
    try:
        record = _record_of(temporary)
        if keep_previous and _verified(path):
            _move(path, previous_path(path))
        record_path(path).unlink(missing_ok=True)
        os.replace(temporary, path)
        write_json(record_path(path), record)
        _sync_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) onto the CPU, check it against its
    record and its format; a damaged or missing one is replaced by the previous one (with a
    warning) when that exists and is intact."""
    try:
        return _read(path)
    except DataError as damage:
        previous = previous_path(path)
        if not previous.is_file():
            raise
        try:
            payload = _read(previous)
        except DataError as also:
            raise DataError(f"{damage}; the previous one cannot be used either: {also}") from None
        warnings.warn(
            f"{damage}; using the previous checkpoint {previous} (step {payload.get('step')})",
            DenseTasksWarning,
            stacklevel=2,
        )
        return payload


def has_checkpoint(path: Path) -> bool:
    """Whether :func:`load_checkpoint` of ``path`` finds a file (it or the previous one)."""
    return path.is_file() or previous_path(path).is_file()


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    problem = _damage(path)
    if problem is not None:
        raise DataError(f"checkpoint {path} is damaged: {problem}")
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


def _damage(path: Path) -> str | None:
    """How the file ``path`` differs from its record; ``None`` when it matches or has no
    record (then only torch can tell whether it is whole)."""
    record_file = record_path(path)
    if not record_file.is_file():
        return None
    try:
        record = json.loads(record_file.read_text())
        size, digest = int(record["size"]), str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"its record {record_file} cannot be read ({error})"
    actual = _record_of(path)
    if actual["size"] != size:
        return f"it is {actual['size']} bytes, {size} were written (a torn or cut file)"
    if actual["sha256"] != digest:
        return "its SHA-256 differs from the one recorded when it was written (changed bytes)"
    return None


def _verified(path: Path) -> bool:
    """Whether ``path`` exists and matches its record (only such a file is kept as the
    previous checkpoint)."""
    return path.is_file() and record_path(path).is_file() and _damage(path) is None


def _record_of(path: Path) -> dict[str, Any]:
    with path.open("rb") as stream:
        digest = hashlib.file_digest(stream, "sha256").hexdigest()
    return {"size": path.stat().st_size, "sha256": digest}


def _write_temporary(payload: dict[str, Any], path: Path) -> Path:
    """``payload`` in a new temporary file beside ``path``, flushed to the disk."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temporary = Path(name)
    stream = os.fdopen(handle, "wb")
    writer = _RecordingWriter(stream)
    try:
        with stream:
            torch.save(payload, writer)
            writer.flush()
            writer.sync()
    except BaseException:
        temporary.unlink(missing_ok=True)
        full = writer.error and no_room_error(path, writer.error, _size_of(payload, path), True)
        if not full:
            raise
        raise full from None
    return temporary


class _RecordingWriter:
    """A binary stream that keeps the ``OSError`` of a failed write: ``torch.save`` turns it
    into a ``RuntimeError`` that does not say why (a full disk)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        return self._recording(self.stream.write, data)

    def flush(self) -> None:
        self._recording(self.stream.flush)

    def sync(self) -> None:
        """``fsync``: the bytes are on the disk (some file systems report a full disk only
        here)."""
        self._recording(os.fsync, self.stream.fileno())

    def _recording(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except OSError as error:
            self.error = error
            raise


def _move(source: Path, target: Path) -> None:
    """Rename a checkpoint and its record so that ``target`` never pairs with another
    file's record."""
    record_path(target).unlink(missing_ok=True)
    os.replace(source, target)
    os.replace(record_path(source), record_path(target))


def _sync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (some file systems cannot sync a folder)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
    finally:
        os.close(descriptor)


def _size_of(payload: dict[str, Any], path: Path) -> int:
    """About the size of ``payload``'s checkpoint: the checkpoint it replaces, or the bytes
    of its tensors plus :data:`RECORD_BYTES` each, whichever is larger."""
    return max(_estimated_bytes(payload), path.stat().st_size if path.is_file() else 0)


RECORD_BYTES = 512
"""What the archive adds per tensor, rounded up (its headers, 64-byte alignment, its pickled
description): 346 bytes measured on a run's ``last.pt``."""


def _estimated_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.untyped_storage().nbytes() + RECORD_BYTES
    if isinstance(value, dict):
        return sum(_estimated_bytes(item) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(_estimated_bytes(item) for item in value)
    return 0


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
