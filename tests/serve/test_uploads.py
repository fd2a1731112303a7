"""Uploads judged by their bytes: the size in the header against Pillow's, and 413 for every
over-limit image before Pillow opens it (so its decompression-bomb warning never comes)."""

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from densetasks.serve.uploads import Limits, UploadError, decode_image, decode_palette, header_size

RGB = np.random.default_rng(0).integers(0, 256, (37, 53, 4), dtype=np.uint8)

VARIANTS = [
    ("RGB", "PNG", {}),
    ("L", "PNG", {}),
    ("P", "PNG", {}),
    ("RGB", "JPEG", {}),
    ("L", "JPEG", {"progressive": True}),
    ("RGB", "GIF", {}),
    ("RGB", "BMP", {}),
    ("P", "BMP", {}),
    ("RGB", "WEBP", {}),  # VP8
    ("RGB", "WEBP", {"lossless": True}),  # VP8L
    ("RGBA", "WEBP", {}),  # VP8X (alpha)
]


def encoded(mode: str, kind: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(RGB, "RGBA").convert(mode).save(buffer, format=kind, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(("mode", "kind", "options"), VARIANTS)
def test_the_header_size_is_pillows(mode, kind, options) -> None:
    data = encoded(mode, kind, **options)
    assert header_size(data) == Image.open(io.BytesIO(data)).size == (53, 37)


def test_a_cut_or_unknown_header_has_no_size() -> None:
    png = encoded("RGB", "PNG")
    assert header_size(png[:20]) is None
    assert header_size(encoded("RGB", "JPEG")[:30]) is None
    assert header_size(b"<svg></svg>") is None


def huge_png(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR (CRC fixed) claims ``width`` x ``height``."""
    data = bytearray(encoded("RGB", "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def huge_jpeg() -> bytes:
    data = bytearray(encoded("RGB", "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65535, 65535)
    return bytes(data)


def huge_bmp() -> bytes:
    data = bytearray(encoded("RGB", "BMP"))
    data[18:26] = struct.pack("<ii", 100_000, -100_000)
    return bytes(data)


def huge_gif() -> bytes:
    data = bytearray(encoded("RGB", "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def huge_webp() -> bytes:
    data = bytearray(encoded("RGBA", "WEBP"))  # VP8X
    data[24:30] = (100_000 - 1).to_bytes(3, "little") * 2
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (huge_png(100_000, 100_000), "100000x100000 = 10,000,000,000"),
        (huge_png(3000, 3000), "3000x3000 = 9,000,000"),
        (huge_jpeg(), "65535x65535 = 4,294,836,225"),
        (huge_bmp(), "100000x100000 = 10,000,000,000"),
        (huge_gif(), "65535x65535 = 4,294,836,225"),
        (huge_webp(), "100000x100000 = 10,000,000,000"),
    ],
    ids=["png-1e10", "png-9e6", "jpeg", "bmp", "gif", "webp"],
)
def test_every_over_limit_image_is_413_before_pillow_opens_it(data, size) -> None:
    with warnings.catch_warnings(record=True) as caught, pytest.raises(UploadError) as error:
        warnings.simplefilter("always")
        decode_image(data, Limits())
    assert error.value.status == 413
    assert str(error.value) == f"image: {size} pixels, over the limit of 4,000,000 pixels"
    assert caught == []  # no DecompressionBombWarning, nothing at all


def test_an_over_limit_palette_is_413() -> None:
    with pytest.raises(UploadError, match="palette: 100000x100000") as error:
        decode_palette(huge_png(100_000, 100_000), Limits())
    assert error.value.status == 413


def test_an_image_within_the_limit_is_read() -> None:
    image = decode_image(encoded("RGB", "WEBP", lossless=True), Limits(max_pixels=53 * 37))
    expected = RGB[..., :3].astype(np.float32) / 255
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected, atol=1e-6)
