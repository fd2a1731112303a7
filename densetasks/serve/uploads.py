"""Uploaded files to tensors, safely: type by content, size limits, a private temp folder.

An upload is judged by its first bytes, never by its name or declared type; it is written
under a name the server chooses in a fresh temporary folder (removed afterwards) and read
with the same readers as ``densetasks predict`` (:func:`~densetasks.data.io.read_image`
refuses too many pixels from the header, before decoding). Nothing a request sends becomes
part of a path.
"""

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from densetasks.data.io import read_image
from densetasks.data.palettes import read_palette_png
from densetasks.errors import DataError

IMAGE_SIGNATURES = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpeg": (b"\xff\xd8\xff",),
    "gif": (b"GIF87a", b"GIF89a"),
    "bmp": (b"BM",),
}
"""Accepted image formats by their leading bytes (WebP is checked apart: RIFF....WEBP)."""


class UploadError(Exception):
    """A request's upload refused: ``status`` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may send: ``max_upload_bytes`` per file, ``max_pixels`` per image."""

    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 4_000_000


def sniff_image(data: bytes) -> str | None:
    """The image format of ``data`` from its first bytes, ``None`` if not an accepted one."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for kind, signatures in IMAGE_SIGNATURES.items():
        if any(data.startswith(signature) for signature in signatures):
            return kind
    return None


def check_size(data: bytes, field: str, limits: Limits) -> None:
    """413 when ``data`` is over the upload limit, 400 when it is empty."""
    if len(data) > limits.max_upload_bytes:
        raise UploadError(
            413, f"{field}: {len(data):,} bytes, over the limit of {limits.max_upload_bytes:,}"
        )
    if not data:
        raise UploadError(400, f"{field}: the file is empty")


def decode_image(data: bytes, limits: Limits) -> torch.Tensor:
    """An uploaded image as float ``[3, H, W]`` in ``[0, 1]``: 415 for a type that is not an
    image we read, 413 for too many pixels, 400 for a broken file."""
    check_size(data, "image", limits)
    kind = sniff_image(data)
    if kind is None:
        raise UploadError(415, "image: not a PNG, JPEG, WebP, GIF or BMP file (judged by content)")
    with tempfile.TemporaryDirectory(prefix="densetasks-serve-") as folder:
        path = Path(folder) / f"upload.{kind}"
        path.write_bytes(data)
        _check_pixels(path, "image", limits)
        return _read(lambda: read_image(path, limits.max_pixels), path, "image")


def decode_palette(data: bytes, limits: Limits) -> torch.Tensor:
    """An uploaded Task Palette PNG (8-bit grey or palette mode) as int64 ``[H, W]``."""
    check_size(data, "palette", limits)
    if sniff_image(data) != "png":
        raise UploadError(415, "palette: not a PNG file (judged by content)")
    with tempfile.TemporaryDirectory(prefix="densetasks-serve-") as folder:
        path = Path(folder) / "palette.png"
        path.write_bytes(data)
        _check_pixels(path, "palette", limits)
        return _read(lambda: read_palette_png(path), path, "palette")


def _check_pixels(path: Path, field: str, limits: Limits) -> None:
    """413 when the header announces more than ``max_pixels`` pixels (nothing decoded)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return  # the reader names what is wrong with the file
    if width * height > limits.max_pixels:
        raise UploadError(
            413,
            f"{field}: {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{limits.max_pixels:,} pixels",
        )


def _read(reader: Callable[[], torch.Tensor], path: Path, field: str) -> torch.Tensor:
    """``reader()``; its DataError becomes a 400 naming the field, not the temp path."""
    try:
        return reader()
    except DataError as error:
        raise UploadError(400, str(error).replace(str(path), field)) from None
