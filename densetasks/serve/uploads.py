"""Uploaded files to tensors, safely: type by content, size limits, a private temp folder.

An upload is judged by its first bytes, never by its name or declared type. Its width and
height are read from those bytes too (:func:`header_size`, a few fixed offsets per format),
so an image over the pixel limit is refused with 413 before Pillow opens it: Pillow's own
decompression-bomb warning and error never come first. It is then written under a name the
server chooses in a fresh temporary folder (removed afterwards) and read with the same
readers as ``densetasks predict``. Nothing a request sends becomes part of a path.
"""

import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

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
    _check_pixels(data, "image", limits)
    with tempfile.TemporaryDirectory(prefix="densetasks-serve-") as folder:
        path = Path(folder) / f"upload.{kind}"
        path.write_bytes(data)
        return _read(lambda: read_image(path, limits.max_pixels), path, "image")


def decode_palette(data: bytes, limits: Limits) -> torch.Tensor:
    """An uploaded Task Palette PNG (8-bit grey or palette mode) as int64 ``[H, W]``."""
    check_size(data, "palette", limits)
    if sniff_image(data) != "png":
        raise UploadError(415, "palette: not a PNG file (judged by content)")
    _check_pixels(data, "palette", limits)
    with tempfile.TemporaryDirectory(prefix="densetasks-serve-") as folder:
        path = Path(folder) / "palette.png"
        path.write_bytes(data)
        return _read(lambda: read_palette_png(path), path, "palette")


def _check_pixels(data: bytes, field: str, limits: Limits) -> None:
    """413 when the header announces more than ``max_pixels`` pixels (nothing decoded)."""
    size = header_size(data)
    if size is None:
        return  # a header we cannot read: the reader names what is wrong with the file
    width, height = size
    if width * height > limits.max_pixels:
        raise UploadError(
            413,
            f"{field}: {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{limits.max_pixels:,} pixels",
        )


JPEG_SIZE_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""The JPEG start-of-frame markers SOF0..SOF15 (0xC4 DHT, 0xC8 JPG, 0xCC DAC are not)."""
JPEG_LONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD9)})
"""JPEG markers without a length field (TEM, RST0..7, SOI)."""


def header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` as an image's header states it, without decoding anything, for
    the formats :func:`sniff_image` accepts; ``None`` when the header is cut short or broken.

    PNG: the IHDR chunk; GIF: the logical screen; BMP: the DIB header (height negative for
    top-down rows); WebP: the VP8 / VP8L / VP8X chunk; JPEG: the first start-of-frame marker.
    """
    try:
        kind = sniff_image(data)
        if kind == "png" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if kind == "gif":
            return struct.unpack("<HH", data[6:10])
        if kind == "bmp":
            if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
                return struct.unpack("<HH", data[18:22])
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)
        if kind == "webp":
            return _webp_size(data)
        if kind == "jpeg":
            return _jpeg_size(data)
    except struct.error:
        return None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the frame tag and start code
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14-bit sizes minus one, after the signature byte
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas sizes minus one
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    position = 2  # after SOI
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in JPEG_LONE_MARKERS:
            position += 2
            continue
        if marker in JPEG_SIZE_MARKERS:
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return (width, height) if height else None  # 0: defined later by a DNL marker
        position += 2 + struct.unpack(">H", data[position + 2 : position + 4])[0]
    return None


def _read(reader: Callable[[], torch.Tensor], path: Path, field: str) -> torch.Tensor:
    """``reader()``; its DataError becomes a 400 naming the field, not the temp path."""
    try:
        return reader()
    except DataError as error:
        raise UploadError(400, str(error).replace(str(path), field)) from None
