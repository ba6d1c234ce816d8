"""Fitting pictures over the API's 5 MB: re-encoded in memory until they fit, boxes mapped back.

A JPEG or PNG over `MAX_IMAGE_BYTES` is decoded with Pillow and encoded as a JPEG at falling
qualities (`QUALITY_STEPS`); if even the lowest is too big, it is downscaled (LANCZOS) by the
factor its size suggests, again until it fits. What was sent is a `records.Fit`; the answer's
boxes are mapped back to the original's pixels (`map_answer`), so SQL users see coordinates
of the file on disk whatever was sent.

Orientation: the pixels are sent as they are stored, EXIF orientation NOT applied, and no
EXIF is sent along; boxes are in that same stored pixel grid both ways (as for a small file,
whose pixels the API gets as they are). The original's bytes are untouched (capture times
still come from its EXIF).

What cannot be fitted is skipped with a reason, never a crash: a file that does not decode
(`undecodable`), or more pixels than `MAX_FIT_PIXELS` (`too_many_pixels`: a decompression
bomb, a small file whose pixels would take gigabytes). Fitting is CPU work: `Fitter` runs it
in a thread, at most `FITS_AT_ONCE` at a time, so the decoded pictures in memory stay bounded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import math
import os
from dataclasses import dataclass

from PIL import Image, JpegImagePlugin, PngImagePlugin

from pipeline.preflight import (
    JPEG_MAGIC,
    MAX_IMAGE_BYTES,
    PNG_MAGIC,
    Read,
    Refused,
    read_checked,
    sniff_type,
)
from pipeline.records import Answer, Fit, Outcome, Plate, Recognition

# With fitting on, a file is read whole up to this cap; above it, `too_large` unread.
MAX_READ_BYTES = 64 * 1024 * 1024
QUALITY_STEPS = (90, 80, 70, 60)
# Pillow's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS): 89.5 MP, ~270 MB as RGB.
MAX_FIT_PIXELS = 89_478_485
# Aim under the limit by this much when downscaling; and shrink by 10 % a round at least.
SCALE_MARGIN = 0.95
MAX_SCALE_STEP = 0.9
FITS_AT_ONCE = os.cpu_count() or 1
# NHN's `resolution`: normal at HD (1280x720) or above, judged here on the original's sides.
NORMAL_MIN_SIDES_PX = (1280, 720)
ERROR_DETAIL_CHARS = 120

_PARSERS = {
    JPEG_MAGIC: ("JPEG", JpegImagePlugin.JpegImageFile),
    PNG_MAGIC: ("PNG", PngImagePlugin.PngImageFile),
}


class Unfit(Exception):
    """Why a picture cannot be fitted: an item error code and a one-line message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Upload:
    """What a call sends for one file: its own bytes, or a fitted JPEG (`fit` set)."""

    data: bytes
    filename: str
    content_type: str
    fit: Fit | None = None


def decode(data: bytes) -> Image.Image:
    """The picture's pixels, loaded; `Unfit` if it does not decode or has too many pixels.

    The plugin classes parse the header without Image.open's decompression-bomb check, which
    warns (a warning, not an error, below twice the limit); the pixel count is checked here
    instead, before a pixel is decoded.
    """
    kind, parser = next(
        ((k, p) for m, (k, p) in _PARSERS.items() if data.startswith(m)), ("", None)
    )
    if parser is None:
        raise Unfit("not_image", "neither JPEG nor PNG by its first bytes")
    try:
        image = parser(io.BytesIO(data))
    except Exception as exc:  # Pillow raises many types for a damaged file
        raise Unfit("undecodable", f"not a {kind} Pillow can read: {_detail(exc)}") from None
    width, height = image.size
    if width * height > MAX_FIT_PIXELS:
        image.close()
        raise Unfit(
            "too_many_pixels",
            f"{width}x{height} pixels, over the {MAX_FIT_PIXELS} a picture may have to be fitted",
        )
    try:
        image.load()
    except Exception as exc:  # truncated, corrupt data, an unsupported variant
        image.close()
        raise Unfit("undecodable", f"its {kind} data does not decode: {_detail(exc)}") from None
    return image


def check(data: bytes) -> tuple[str, str] | None:
    """Why `data` (over the API's limit) could not be fitted, or None if it can: what the dry
    run asks. Decoding is the part that can fail; encoding a decoded picture always works."""
    try:
        decode(data).close()
    except Unfit as unfit:
        return unfit.reason, unfit.message
    return None


def fit_image(data: bytes, limit_bytes: int = MAX_IMAGE_BYTES) -> tuple[bytes, Fit]:
    """A JPEG of `data`'s picture of at most `limit_bytes`, and what it is; `Unfit` if none.

    Qualities first (the picture keeps every pixel), then downscales at the lowest quality
    (pixels matter more to a plate reader than JPEG artefacts), each from the original.
    """
    with decode(data) as original:
        image = _for_jpeg(original)
        width, height = image.size
        for quality in QUALITY_STEPS:
            encoded = _jpeg(image, quality)
            if len(encoded) <= limit_bytes:
                return encoded, Fit(len(encoded), 1.0, quality, width, height, width, height)
        scale = 1.0
        while True:
            scale *= min(MAX_SCALE_STEP, SCALE_MARGIN * math.sqrt(limit_bytes / len(encoded)))
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            encoded = _jpeg(image.resize(size, Image.Resampling.LANCZOS), quality)
            if len(encoded) <= limit_bytes:
                fit = Fit(len(encoded), size[0] / width, quality, width, height, *size)
                return encoded, fit


def _for_jpeg(image: Image.Image) -> Image.Image:
    """The picture in a mode JPEG takes: RGB or L (8 bits)."""
    mode = image.mode
    if mode in ("RGB", "L"):
        return image
    if mode in ("1", "LA", "La"):
        return image.convert("L")
    if mode.startswith("I") or mode == "F":
        # 16-bit grey (PNG): scaled to 8 bits; Pillow's own convert("L") would clip at 255.
        return image.convert("I").point(lambda value: value / 256).convert("L")
    return image.convert("RGB")  # RGBA, P, PA, CMYK, YCbCr, ...: alpha dropped


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _detail(exc: Exception) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:ERROR_DETAIL_CHARS]


# -- boxes back to the original -------------------------------------------------------------


def map_box(
    box: tuple[int, int, int, int, int, int, int, int], fit: Fit
) -> tuple[int, int, int, int, int, int, int, int]:
    """A box of the picture sent, in the original's pixels: each side divided by its scale
    (pixel centres to pixel centres, as the resize maps them), rounded, within the picture."""
    sx, sy = fit.sent_width / fit.width, fit.sent_height / fit.height
    corners = []
    for index, value in enumerate(box):
        scale, side = (sx, fit.width) if index % 2 == 0 else (sy, fit.height)
        corners.append(min(max(round((value + 0.5) / scale - 0.5), 0), side - 1))
    return tuple(corners)  # type: ignore[return-value]


def resolution_of(width: int, height: int) -> str:
    """NHN's `resolution` for a picture of these sides."""
    long_min, short_min = NORMAL_MIN_SIDES_PX
    return "normal" if max(width, height) >= long_min and min(width, height) >= short_min else "low"


def map_recognition(recognition: Recognition, fit: Fit) -> Recognition:
    """`recognition` of a fitted picture as if of the original: boxes in its pixels, and its
    resolution judged on its sides. The raw response stays as the API sent it."""
    plates = tuple(
        plate if plate.box is None else Plate(plate.value, plate.conf, map_box(plate.box, fit))
        for plate in recognition.plates
    )
    resolution = recognition.resolution
    if resolution is not None:
        resolution = resolution_of(fit.width, fit.height)
    return dataclasses.replace(recognition, plates=plates, resolution=resolution)


def map_answer(answer: Answer, fit: Fit | None) -> Answer:
    """`answer` with its recognition mapped back to the original, when the picture was fitted."""
    if fit is None or answer.recognition is None:
        return answer
    return dataclasses.replace(answer, recognition=map_recognition(answer.recognition, fit))


def with_fit(outcome: Outcome, fit: Fit | None) -> Outcome:
    """`outcome` of a call that sent a fitted picture: its answer mapped back (`map_answer`),
    and what was sent (`Outcome.fit`). As it is when the file went as it is."""
    if fit is None or outcome.call is None:
        return outcome
    call = dataclasses.replace(outcome.call, answer=map_answer(outcome.call.answer, fit))
    return dataclasses.replace(outcome, call=call, fit=fit)


# -- in the run -------------------------------------------------------------------------------


class Fitter:
    """Makes each file's `Upload`, fitting (with `enabled`) those over the API's limit in a
    thread, `FITS_AT_ONCE` at a time. `read_limit_bytes` is how much of a file to read."""

    def __init__(self, enabled: bool, at_once: int = FITS_AT_ONCE) -> None:
        self.enabled = enabled
        self.read_limit_bytes = MAX_READ_BYTES if enabled else MAX_IMAGE_BYTES
        self._slots = asyncio.Semaphore(at_once)

    async def upload(self, data: bytes) -> Upload | tuple[str, str]:
        """What to send for `data` (a JPEG or PNG read whole), or (reason, message) to skip."""
        filename, content_type = sniff_type(data[:8]) or ("image.jpg", "image/jpeg")
        if len(data) <= MAX_IMAGE_BYTES:
            return Upload(data, filename, content_type)
        if not self.enabled:
            return "too_large", f"over the API's {MAX_IMAGE_BYTES} bytes"
        try:
            async with self._slots:
                fitted, fit = await asyncio.to_thread(fit_image, data)
        except Unfit as unfit:
            return unfit.reason, unfit.message
        return Upload(fitted, "image.jpg", "image/jpeg", fit)

    async def preflight(self, path: str | bytes) -> Read:
        """A worker's read of `path` and, for a picture over the API's limit, whether it
        would fit (decoded, not encoded): the dry run's check, skipping what a run skips."""
        checked = await read_checked(path, self.read_limit_bytes)
        if isinstance(checked, tuple) or len(checked.data) <= MAX_IMAGE_BYTES:
            return checked
        async with self._slots:
            unfit = await asyncio.to_thread(check, checked.data)
        return Refused(*unfit, checked.sha256) if unfit else checked
