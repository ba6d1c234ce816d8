"""Pictures over the API's 5 MB, for the tests and the benchmark of fitting (pipeline/fitting.py).

Noise makes them big; each has a marker plate (a rectangle of the emulator's `--locate-plates`
colour) at a known place, whose box the emulator answers in the pixels of the picture sent.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageDraw

from pipeline.emulator.locate import MARKER_RGB

Box = tuple[int, int, int, int]  # left, top, right, bottom, inclusive

# 16 grey levels of noise: PNG stores it in ~4 bits a pixel, JPEG needs far more, so a 10 MB
# PNG must be downscaled to fit (a JPEG of 8-bit noise fits at quality 90 unscaled).
PNG_NOISE_LEVELS = 16
JFIF_HEADER = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


def marker_box(width: int, height: int) -> Box:
    """Where the marker plate goes: a plate's shape (about 4.7:1), left of the middle."""
    w, h = width // 8, width // 8 * 110 // 520
    left, top = width * 3 // 10, height * 6 // 10
    return left, top, left + w - 1, top + h - 1


def _with_marker(image: Image.Image) -> tuple[Image.Image, Box]:
    box = marker_box(*image.size)
    ImageDraw.Draw(image).rectangle(box, fill=MARKER_RGB)
    return image, box


def noise_png(path: Path, width: int = 4000, height: int = 3000, *, seed: int = 0) -> Box:
    """A PNG of grey noise (10.3 MB at 4000x3000) with the marker; its box."""
    mask = 256 - 256 // PNG_NOISE_LEVELS
    levels = bytes(b & mask for b in range(256))
    pixels = random.Random(seed).randbytes(width * height).translate(levels)
    image, box = _with_marker(Image.frombytes("L", (width, height), pixels).convert("RGB"))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    path.write_bytes(out.getvalue())
    return box


def noise_jpeg(path: Path, width: int = 1440, height: int = 1080, *, seed: int = 1) -> Box:
    """A JPEG of colour noise at quality 100, 4:4:4 (about 6 MB at 1440x1080), with the
    marker; its box."""
    pixels = random.Random(seed).randbytes(width * height * 3)
    image, box = _with_marker(Image.frombytes("RGB", (width, height), pixels))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=100, subsampling=0)
    path.write_bytes(out.getvalue())
    return box


def undecodable_jpeg(path: Path, size: int = 6 * 1024 * 1024, *, seed: int = 2) -> None:
    """A JPEG header followed by garbage, over the API's limit."""
    path.write_bytes(JFIF_HEADER + random.Random(seed).randbytes(size - len(JFIF_HEADER)))


def bomb_png(path: Path, side: int = 30_000, size: int = 6 * 1024 * 1024) -> None:
    """A PNG of `side` x `side` grey pixels (900 MP: 10 times Pillow's bomb threshold) in a
    file just over the API's limit: its first rows of noise, the rest cut off."""
    rows = random.Random(3).randbytes(size)
    idat = zlib.compress(rows, 1)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat))


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def small_jpeg(path: Path, width: int = 640, height: int = 480) -> Box:
    """A small JPEG (sent as it is) with the marker; its box."""
    image, box = _with_marker(Image.new("RGB", (width, height), (40, 90, 140)))
    image.save(path, "JPEG", quality=90)
    return box
