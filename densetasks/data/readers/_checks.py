"""Shared helpers of the real-dataset readers: up-front folder checks, label decoding.

Every helper raises :class:`~densetasks.errors.DataError` naming the path and what was
expected, so a reader opened on a wrong or incomplete folder fails before training starts.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from densetasks.data.geometry import normals_from_depth, scale_intrinsics
from densetasks.data.io import read_png_array
from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import ConfigError, DataError


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else a DataError saying which folder holds ``what``."""
    if not path.is_dir():
        raise DataError(f"{path}: missing folder (expected {what})")
    return path


def files_for_names(
    folder: Path, names: Sequence[str], suffixes: Sequence[str], what: str
) -> list[Path]:
    """One existing file per name in ``folder`` (first suffix that exists wins).

    Missing files are reported together: how many of the split lack one, and the first few.
    """
    require_dir(folder, what)
    found: list[Path] = []
    missing: list[str] = []
    for name in names:
        candidates = [folder / f"{name}{suffix}" for suffix in suffixes]
        path = next((candidate for candidate in candidates if candidate.is_file()), None)
        if path is None:
            missing.append(name)
        else:
            found.append(path)
    if missing:
        expected = "|".join(suffixes)
        raise DataError(
            f"{folder}: {len(missing)} of {len(names)} {what} files are missing "
            f"(expected <name>{expected}, e.g. {missing[:3]})"
        )
    return found


def read_class_png(path: Path, bit_depth: int = 8) -> np.ndarray:
    """The integer values ``[H, W]`` of a single-channel 8-bit or 16-bit label PNG."""
    values = read_png_array(path)
    if bit_depth == 8 and values.max(initial=0) > 255:
        raise DataError(f"{path}: expected an 8-bit label PNG, got values above 255")
    return values


def read_png16(path: Path) -> np.ndarray:
    """The raw values of a 16-bit grey PNG (disparity, instance ids); 8-bit is an error."""
    values = read_png_array(path)
    with Image.open(path) as image:
        mode = image.mode
    if mode not in ("I", "I;16", "I;16B"):
        raise DataError(f"{path}: expected a 16-bit single-channel PNG, got mode {mode}")
    return values


def remap_classes(ids: np.ndarray, table: np.ndarray, path: Path) -> torch.Tensor:
    """Class ids mapped through ``table`` (``table[raw]`` = class, ``IGNORE_INDEX``, or -1
    for a raw value the dataset never uses) as int64 ``[H, W]``.

    A raw value outside the table or mapped to -1 is an error naming the file.
    """
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= len(table)):
        raise DataError(
            f"{path}: label values must be in 0..{len(table) - 1}, "
            f"got {int(ids.min())}..{int(ids.max())}"
        )
    mapped = table[ids]
    if (mapped < 0).any():
        unexpected = sorted(set(ids[mapped < 0].tolist()))[:5]
        raise DataError(
            f"{path}: unexpected label values {unexpected} (neither a class nor ignore)"
        )
    return torch.from_numpy(mapped)


def shift_table(num_classes: int, size: int = 256) -> np.ndarray:
    """The table of labels stored as ``1..num_classes`` with ``0`` = unlabelled.

    Class ``k`` becomes ``k - 1``; 0 and every value above ``num_classes`` become ignore.
    """
    table = np.full(size, IGNORE_INDEX, dtype=np.int64)
    table[1 : num_classes + 1] = np.arange(num_classes)
    return table


def identity_table(num_classes: int, ignore: int = IGNORE_INDEX, size: int = 256) -> np.ndarray:
    """The table of labels stored as ``0..num_classes-1`` with ``ignore`` (default 255)."""
    table = np.full(size, -1, dtype=np.int64)
    table[:num_classes] = np.arange(num_classes)
    table[ignore] = IGNORE_INDEX
    return table


def pinhole(fx: float, fy: float, cx: float, cy: float) -> torch.Tensor:
    """A float32 ``[3, 3]`` pinhole matrix."""
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32)


def intrinsics_for_size(
    intrinsics: torch.Tensor, native_size: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """``intrinsics`` of an image of ``native_size`` (H, W) scaled to an image of ``size``."""
    if tuple(size) == tuple(native_size):
        return intrinsics.clone()
    return scale_intrinsics(intrinsics, native_size, size)


def normals_to_opencv(vectors: np.ndarray, signs: Sequence[float], path: Path) -> torch.Tensor:
    """Normals ``[H, W, 3]`` in a dataset's axes as unit ``[3, H, W]`` in the OpenCV frame.

    ``signs`` multiplies each component (e.g. ``(1, -1, -1)`` turns x right / y up /
    z backwards into x right / y down / z forward); vectors far from unit length (the
    dataset's "no normal" encodings such as the zero vector) become the zero vector.
    """
    if vectors.ndim != 3 or vectors.shape[2] != 3:
        raise DataError(f"{path}: normals must be [H, W, 3], got shape {list(vectors.shape)}")
    if not np.isfinite(vectors).all():
        raise DataError(f"{path}: normals hold NaN or infinite values")
    tensor = torch.from_numpy(vectors.astype(np.float32)).permute(2, 0, 1)
    tensor = tensor * torch.tensor(list(signs), dtype=torch.float32)[:, None, None]
    length = tensor.norm(dim=0, keepdim=True)
    unit = (length > 0.5) & (length < 1.5)
    return torch.where(unit, tensor / length.clamp_min(1e-6), torch.zeros_like(tensor)).contiguous()


def derive_normals(
    depth: torch.Tensor, intrinsics: torch.Tensor | None, path: Path
) -> torch.Tensor:
    """Normals ``[3, H, W]`` computed from metric depth, needing intrinsics (Lopes, Vu &
    de Charette, WACV 2023, App. B.1.1)."""
    if intrinsics is None:
        raise DataError(f"{path}: normals from depth need the camera intrinsics, unknown here")
    return normals_from_depth(depth, intrinsics)


def check_signs(signs: Sequence[float], key: str) -> tuple[float, float, float]:
    """A normals sign triple: three values, each +1 or -1."""
    values = tuple(float(sign) for sign in signs)
    if len(values) != 3 or any(value not in (1.0, -1.0) for value in values):
        raise ConfigError(f"data.options.{key}: expected three signs of +1/-1, got {signs!r}")
    return values  # type: ignore[return-value]


def check_same_size(label: torch.Tensor, image: torch.Tensor, path: Path) -> torch.Tensor:
    """A label whose size differs from its image is an error naming the label file."""
    if tuple(label.shape[-2:]) != tuple(image.shape[-2:]):
        raise DataError(
            f"{path}: label size {tuple(label.shape[-2:])} differs from the image size "
            f"{tuple(image.shape[-2:])}"
        )
    return label
