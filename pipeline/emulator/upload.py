"""The real service's checks of an upload, once its credentials are good: size, the multipart
field ``image``, an image type by its magic bytes, a file not cut short, a header that parses.

The only thing read from the image is its width and height (with Pillow), to place the boxes
inside it and to compute ``resolution``; the plates come from ``synthetic``.
"""

from __future__ import annotations

import asyncio
import hashlib
from io import BytesIO
from typing import Any

from aiohttp import BodyPartReader, web
from PIL import JpegImagePlugin, PngImagePlugin

from pipeline.emulator.answers import (
    EMPTY_FILE,
    INVALID_FILE,
    INVALID_FILE_TYPE,
    INVALID_PARAMETER,
    TOO_LARGE,
    Decision,
)
from pipeline.emulator.locate import located_result
from pipeline.emulator.synthetic import image_decision, synthetic_result

MAX_IMAGE_BYTES = 5 * 1024 * 1024
# Room for the multipart boundaries and part headers around an image of exactly MAX_IMAGE_BYTES.
MULTIPART_ALLOWANCE_BYTES = 64 * 1024
READ_CHUNK_BYTES = 64 * 1024

MAGIC_FILE_TYPES = {b"\xff\xd8\xff": "jpg", b"\x89PNG\r\n\x1a\n": "png"}
_HEADER_PARSERS = {"jpg": JpegImagePlugin.JpegImageFile, "png": PngImagePlugin.PngImageFile}
# Camera image headers (EXIF and thumbnail included) fit here and parse inline in ~30 us; only
# files whose size is not found in it are parsed again in full, in a thread.
HEADER_PREFIX_BYTES = 64 * 1024
# A file cut short has no end marker near its end, and the real service cannot decode it.
END_MARKERS = {"jpg": b"\xff\xd9", "png": b"IEND"}
END_MARKER_SEARCH_BYTES = 1024


async def answer_upload(
    request: web.Request,
    *,
    record: bool,
    plates: dict[str, Any],
    no_plate_body: str,
    locate: bool = False,
) -> Decision:
    """The real service's answer to the upload, once the credentials are known to be good.

    ``plates`` are synthetic_result's options; ``record`` hashes every upload for the stats;
    ``locate`` answers the box of a marker drawn in the picture (see ``locate``).
    """
    length = request.content_length
    if length is not None and length > MAX_IMAGE_BYTES + MULTIPART_ALLOWANCE_BYTES:
        return Decision(TOO_LARGE)
    try:
        data = await _read_image_field(request)
    except _Rejected as rejected:
        return Decision(rejected.code)
    # Hashed twice on success when recording; not at all when not (benchmarks).
    sha = hashlib.sha256(data).hexdigest() if record else None
    if not data:
        return Decision(EMPTY_FILE, image_sha256=sha)
    file_type = next((t for magic, t in MAGIC_FILE_TYPES.items() if data.startswith(magic)), None)
    if file_type is None:
        return Decision(INVALID_FILE_TYPE, image_sha256=sha)
    if END_MARKERS[file_type] not in data[-END_MARKER_SEARCH_BYTES:]:
        return Decision(INVALID_FILE, image_sha256=sha)
    size = _read_size(data[:HEADER_PREFIX_BYTES], file_type)
    if size is None and len(data) > HEADER_PREFIX_BYTES:
        # Pillow scans a damaged JPEG byte by byte (seconds for 5 MB): keep that off the loop.
        size = await asyncio.to_thread(_read_size, data, file_type)
    if size is None:
        return Decision(INVALID_FILE, image_sha256=sha)
    if locate:  # a plate wherever the marker is: decoded, off the loop
        result = synthetic_result(data, *size, file_type, **{**plates, "no_plate_share": 0.0})
        result = await asyncio.to_thread(located_result, result, data, file_type)
    else:
        result = synthetic_result(data, *size, file_type, **plates)
    return image_decision(result, no_plate_body, sha)


class _Rejected(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _read_size(data: bytes, file_type: str) -> tuple[int, int] | None:
    try:
        # The plugin class parses the header only. Unlike Image.open it skips the
        # decompression-bomb check, which guards decoding pixels, and nothing is decoded here.
        with _HEADER_PARSERS[file_type](BytesIO(data)) as image:
            return image.size
    except Exception:  # Pillow raises many types for a damaged file; all mean "invalid file"
        return None


async def _read_image_field(request: web.Request) -> bytes:
    """Stream the multipart body and return the ``image`` part, never holding more than the cap."""
    # Checked here because aiohttp's reader asserts (not raises) on a non-multipart body.
    if not request.content_type.startswith("multipart/"):
        raise _Rejected(INVALID_PARAMETER)
    try:
        reader = await request.multipart()
        async for part in reader:  # advancing discards the unread parts we skip
            if isinstance(part, BodyPartReader) and part.name == "image":
                data = bytearray()
                while chunk := await part.read_chunk(READ_CHUNK_BYTES):
                    data += chunk
                    if len(data) > MAX_IMAGE_BYTES:
                        raise _Rejected(TOO_LARGE)
                return bytes(data)
    except ValueError as exc:  # malformed multipart: bad boundary, bad part headers
        raise _Rejected(INVALID_PARAMETER) from exc
    raise _Rejected(INVALID_PARAMETER)
