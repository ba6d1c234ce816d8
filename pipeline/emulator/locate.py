"""`--locate-plates`: a plate found where a test drew it, for tests of box accuracy.

The synthetic answers place a box from the bytes alone; a test of the boxes of a picture that
was re-encoded and downscaled before it was sent (pipeline/fitting.py) needs the box of
something really in the picture. Tests draw a marker, a rectangle of `MARKER_RGB`; this finds
it in the upload (decoded with Pillow) and answers its bounding box, in the pixels of the
picture sent, with the plate text of the synthetic answer. No marker: no plate (4000201).
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from PIL import ImageChops, ImageFilter, JpegImagePlugin, PngImagePlugin

# A pure, saturated yellow that noise and flat test scenes hardly ever match 5 pixels square.
MARKER_RGB = (255, 214, 0)
# JPEG at quality 60 and a LANCZOS downscale move a flat colour by a few dozen levels at most.
MARKER_TOLERANCE = 48
# The mask is eroded by this square (isolated noise pixels of the colour drop out), then the
# box grown back by half of it.
ERODE_PX = 5
MAX_LOCATE_PIXELS = 89_478_485  # Pillow's decompression-bomb threshold
_PARSERS = {"jpg": JpegImagePlugin.JpegImageFile, "png": PngImagePlugin.PngImageFile}


def locate_marker(data: bytes, file_type: str) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom), inclusive, of the marker in the picture; None if none."""
    try:
        with _PARSERS[file_type](BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_LOCATE_PIXELS:
                return None
            rgb = image.convert("RGB")
    except Exception:  # a picture Pillow cannot decode shows no marker
        return None
    masks = [
        band.point(lambda v, c=colour: 255 if abs(v - c) <= MARKER_TOLERANCE else 0)
        for band, colour in zip(rgb.split(), MARKER_RGB, strict=True)
    ]
    mask = ImageChops.multiply(ImageChops.multiply(masks[0], masks[1]), masks[2])
    found = mask.filter(ImageFilter.MinFilter(ERODE_PX)).getbbox()
    if found is None:
        return None
    grow = ERODE_PX // 2
    left, top, right, bottom = found  # right and bottom exclusive
    return (
        max(left - grow, 0),
        max(top - grow, 0),
        min(right - 1 + grow, width - 1),
        min(bottom - 1 + grow, height - 1),
    )


def located_result(result: dict[str, Any], data: bytes, file_type: str) -> dict[str, Any]:
    """`result` (a synthetic result with one plate at least) with its first plate's box moved
    to the marker, or with no plate when the picture shows none."""
    box = locate_marker(data, file_type)
    if box is None:
        return {**result, "values": [], "boxes": []}
    left, top, right, bottom = box
    corners = dict(x1=left, y1=top, x2=right, y2=top, x3=right, y3=bottom, x4=left, y4=bottom)
    return {**result, "values": result["values"][:1], "boxes": [corners]}
