"""Reading and writing the files of a dataset: images, label PNGs, ``.npy`` arrays, JSON.

Every reader raises :class:`~densetasks.errors.DataError` naming the file when it is missing,
unreadable, truncated or of the wrong kind, so a bad file in a dataset of thousands is found
in one line. Every writer is atomic: it writes to a temporary name in the target folder and
then renames (``os.replace``), so an interrupted run never leaves a half-written file under
the final name. A write that fails for want of room (a full disk, a quota, a file size
limit) raises :class:`~densetasks.errors.DiskFullError` naming the file and the bytes it
needs (:func:`no_room_error`), and leaves the previous file of that name as it was.

Images are size-checked from their header before they are decoded: ``read_image`` refuses an
image over ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`), and every reader turns
Pillow's own decompression-bomb error into a :class:`~densetasks.errors.DataError`.
"""

import errno
import io
import json
import os
import resource
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from densetasks.errors import DataError, DiskFullError

DEFAULT_MAX_PIXELS = 50_000_000
"""The largest image :func:`read_image` decodes by default: 50 megapixels (8K video is 33).

Reading takes about 35 bytes per pixel at its peak (RGB bytes, float32 copies), 1.8 GB for
50 megapixels, so a service reading uploaded images must refuse huge ones before decoding.
``None`` leaves only Pillow's decompression-bomb limit (an error above twice
``PIL.Image.MAX_IMAGE_PIXELS``, 179 megapixels), which also caps any larger ``max_pixels``.
"""


def read_image(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """An RGB image file as float32 ``[3, H, W]`` in ``[0, 1]`` (grey images become RGB).

    An image of more than ``max_pixels`` pixels (``None``: Pillow's limit) is a
    :class:`DataError` naming the file, its size and the limit, raised before decoding.
    """
    array = np.asarray(_open_image(path, max_pixels).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def read_png_array(path: Path, channels: int = 1) -> np.ndarray:
    """The raw integer values of a PNG: ``[H, W]`` for ``channels=1``, else ``[H, W, channels]``.

    8-bit grey, palette (the indices, not the colours) and 16-bit grey PNGs are read as their
    stored integers; a PNG with the wrong number of channels is an error naming the file.
    """
    image = _open_image(path)
    if channels == 1 and image.mode not in ("L", "P", "I", "I;16", "I;16B", "1"):
        raise DataError(f"{path}: expected a single-channel PNG, got mode {image.mode}")
    if channels == 3 and image.mode != "RGB":
        raise DataError(f"{path}: expected an RGB PNG, got mode {image.mode}")
    return np.asarray(image).astype(np.int64)


def read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` array (no pickles); unreadable or truncated files name the file."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: cannot read .npy array ({error})") from None


def read_json(path: Path) -> Any:
    """A JSON file's content; a syntax error names the file, line and column."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read ({error})") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: invalid JSON ({error})") from None


def write_image(path: Path, image: torch.Tensor) -> None:
    """Write a float ``[3, H, W]`` image in ``[0, 1]`` as an 8-bit RGB file (format by suffix)."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"{path}: image must be [3, H, W], got shape {tuple(image.shape)}")
    array = (image.detach().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8)
    write_png_array(path, array.permute(1, 2, 0).numpy())


def write_png_array(path: Path, array: np.ndarray) -> None:
    """Write ``uint8`` ``[H, W]`` / ``[H, W, 3]`` or ``uint16`` ``[H, W]`` values losslessly.

    The format follows the suffix (``.png``; ``.jpg`` only for RGB images, lossy).
    """
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: PNG values must be uint8 or uint16, got {array.dtype}")
    image = Image.fromarray(np.ascontiguousarray(array))
    image_format = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    _write_atomically(path, lambda handle: image.save(handle, format=image_format))


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write an array as ``.npy``."""
    _write_atomically(path, lambda handle: np.save(handle, array, allow_pickle=False))


def write_json(path: Path, content: Any) -> None:
    """Write JSON, indented, keys in the given order."""
    write_text(path, json.dumps(content, indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    """Write bytes (a rendered picture, a document)."""
    _write_atomically(path, lambda handle: handle.write(data))


NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""The ``OSError`` numbers of a write that failed for want of room."""


def no_room_error(
    path: Path, error: OSError, needed: int, estimated: bool = False
) -> DiskFullError | None:
    """The :class:`DiskFullError` for writing ``needed`` bytes (``estimated``: about that
    many) to ``path`` that failed with ``error``, or ``None`` when ``error`` is not for want
    of room.

    The message names the file, the bytes it needs and what limits them: the free space on
    the file's disk, or the process's file size limit (``ulimit -f``) for ``EFBIG``.
    """
    if error.errno not in NO_ROOM_ERRNOS:
        return None
    if error.errno == errno.EFBIG:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        shown = "unlimited" if limit == resource.RLIM_INFINITY else format_bytes(limit)
        room = f"the file size limit (ulimit -f) is {shown}"
    else:
        folder = next(parent for parent in (path, *path.parents) if parent.exists())
        room = f"{format_bytes(shutil.disk_usage(folder).free)} free on its disk"
    return DiskFullError(
        f"cannot write {path}: {error.strerror}; it needs {'about ' if estimated else ''}"
        f"{format_bytes(needed)}, {room} "
        "(the previous file of that name, if any, is unchanged)"
    )


def format_bytes(count: int) -> str:
    """``1536`` -> ``1.5 KiB``; bytes below 1 KiB as ``812 B``."""
    value, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"


def _open_image(path: Path, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode an image file, so a truncated file fails here, named.

    The size is checked against ``max_pixels`` from the header, before anything is decoded.
    """
    try:
        image = Image.open(path)
        _check_size(path, image, max_pixels)
        image.load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Image.DecompressionBombError as error:
        raise DataError(f"{path}: image too large to decode safely ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: cannot read image ({error})") from None
    return image


def _check_size(path: Path, image: Image.Image, max_pixels: int | None) -> None:
    """Close ``image`` and raise :class:`DataError` if it has more than ``max_pixels`` pixels."""
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise DataError(
            f"{path}: image is {width}x{height} = {width * height:,} pixels, over the limit "
            f"of {max_pixels:,} pixels (max_pixels)"
        )


def _write_atomically(path: Path, write: Callable[[Any], object]) -> None:
    """Run ``write(binary_file)`` into memory, put the bytes in a temporary file beside
    ``path``, then rename it over ``path``. The bytes are rendered first so that a full disk
    is reported with the exact size needed (these files are pictures and documents)."""
    buffer = io.BytesIO()
    write(buffer)
    data = buffer.getvalue()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except OSError as error:
        full = no_room_error(path, error, len(data))
        if full is None:
            raise
        raise full from None
    finally:
        temporary.unlink(missing_ok=True)
