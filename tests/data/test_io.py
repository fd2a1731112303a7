import errno
import re
import struct
import zlib

import numpy as np
import pytest
import torch

from densetasks.data.io import (
    DEFAULT_MAX_PIXELS,
    format_bytes,
    no_room_error,
    read_image,
    read_json,
    read_npy,
    read_png_array,
    write_image,
    write_json,
    write_npy,
    write_png_array,
    write_text,
)
from densetasks.errors import DataError, DiskFullError


def test_image_round_trip_within_quantisation(tmp_path):
    image = torch.rand(3, 6, 7)
    write_image(tmp_path / "a.png", image)
    assert (read_image(tmp_path / "a.png") - image).abs().max() <= 0.5 / 255 + 1e-6


def test_png_arrays_8_and_16_bit_round_trip(tmp_path):
    ids = np.array([[0, 3], [255, 7]], dtype=np.uint8)
    millimetres = np.array([[0, 65535], [1234, 1]], dtype=np.uint16)
    write_png_array(tmp_path / "ids.png", ids)
    write_png_array(tmp_path / "mm.png", millimetres)
    assert np.array_equal(read_png_array(tmp_path / "ids.png"), ids)
    assert np.array_equal(read_png_array(tmp_path / "mm.png"), millimetres)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_png_channel_count_is_checked(tmp_path):
    write_png_array(tmp_path / "rgb.png", np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(DataError, match=r"rgb.png: expected a single-channel PNG"):
        read_png_array(tmp_path / "rgb.png")
    write_png_array(tmp_path / "grey.png", np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(DataError, match=r"grey.png: expected an RGB PNG"):
        read_png_array(tmp_path / "grey.png", channels=3)


def test_truncated_and_missing_files_are_named(tmp_path):
    write_image(tmp_path / "a.png", torch.rand(3, 32, 32))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut.png: cannot read image"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(DataError, match=r"nope.png: file not found"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"bad.npy: cannot read"):
        read_npy(tmp_path / "bad.npy")


def test_npy_and_json_round_trip(tmp_path):
    array = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    write_npy(tmp_path / "x.npy", array)
    assert np.array_equal(read_npy(tmp_path / "x.npy"), array)
    write_json(tmp_path / "x.json", {"K": [[1, 0], [0, 1]]})
    assert read_json(tmp_path / "x.json") == {"K": [[1, 0], [0, 1]]}
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match=r"broken.json: invalid JSON"):
        read_json(tmp_path / "broken.json")


def test_write_failing_midway_leaves_old_file_and_no_temporary(tmp_path):
    write_npy(tmp_path / "a.npy", np.zeros(2))
    with pytest.raises(ValueError):  # object arrays need pickles, refused inside np.save
        write_npy(tmp_path / "a.npy", np.array([object()], dtype=object))
    assert np.array_equal(read_npy(tmp_path / "a.npy"), np.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]


def test_a_full_disk_names_the_file_and_the_bytes_and_keeps_the_old_file(tmp_path, file_size_limit):
    path = tmp_path / "report.md"
    write_text(path, "old")
    with file_size_limit(4096), pytest.raises(DiskFullError) as raised:
        write_text(path, "x" * 10_000)
    assert str(raised.value) == (
        f"cannot write {path}: File too large; it needs 9.8 KiB, the file size limit "
        "(ulimit -f) is 4.0 KiB (the previous file of that name, if any, is unchanged)"
    )
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_no_space_names_the_free_space_and_other_errors_are_not_disk_full(tmp_path):
    error = OSError(errno.ENOSPC, "No space left on device")
    message = str(no_room_error(tmp_path / "new" / "last.pt", error, 3 * 1024**2))
    assert message.startswith(f"cannot write {tmp_path}/new/last.pt: No space left on device;")
    assert re.search(r"it needs 3\.0 MiB, [\d.]+ (B|KiB|MiB|GiB|TiB) free on its disk", message)
    assert no_room_error(tmp_path, OSError(errno.EACCES, "Permission denied"), 1) is None
    assert [format_bytes(n) for n in (812, 1536, 5 * 1024**3)] == ["812 B", "1.5 KiB", "5.0 GiB"]


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose IHDR claims ``width × height`` RGB pixels and that has no pixel data: its
    size is read from the header, and reading must stop there (nothing is allocated)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


def test_an_image_over_max_pixels_names_file_size_and_limit(tmp_path):
    write_image(tmp_path / "small.png", torch.rand(3, 6, 7))
    assert read_image(tmp_path / "small.png", max_pixels=42).shape == (3, 6, 7)
    with pytest.raises(
        DataError, match=r"small.png: image is 7x6 = 42 pixels, over the limit of 41"
    ):
        read_image(tmp_path / "small.png", max_pixels=41)


def test_the_default_limit_refuses_a_large_image_before_decoding_it(tmp_path):
    _png_header_only(tmp_path / "large.png", 8000, 8000)  # 64 MP: under Pillow's limit
    with pytest.raises(
        DataError,
        match=r"large.png: image is 8000x8000 = 64,000,000 pixels, "
        r"over the limit of 50,000,000 pixels",
    ):
        read_image(tmp_path / "large.png")
    assert DEFAULT_MAX_PIXELS == 50_000_000


@pytest.mark.parametrize("max_pixels", [None, DEFAULT_MAX_PIXELS])
def test_a_decompression_bomb_is_a_data_error(tmp_path, max_pixels):
    _png_header_only(tmp_path / "bomb.png", 100_000, 100_000)  # 10 G pixels
    with pytest.raises(DataError, match=r"bomb.png: .*10000000000 pixels"):
        read_image(tmp_path / "bomb.png", max_pixels=max_pixels)
    with pytest.raises(DataError, match=r"bomb.png: image too large to decode safely"):
        read_png_array(tmp_path / "bomb.png", channels=3)
