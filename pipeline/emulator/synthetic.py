"""The made-up plates: what an image gets on its own merits, fixed by the sha256 of its bytes.

Like the live service, an image has one plate at most: a share of images (``no_plate_share``, a
quarter by default, chosen by their bytes) is answered resultCode 4000201
VEHICLE_PLATE_NOT_FOUND, the others one plate with its confidence and box (``max_plates`` > 1
gives up to that many, for tests of the pairing of ``values[i]`` with ``boxes[i]``). Pure: no
I/O, nothing read from the image but the width and height it is given.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pipeline.emulator.answers import PLATE_NOT_FOUND, SUCCESS, Decision

NORMAL_MIN_LONG_SIDE_PX = 1280
NORMAL_MIN_SHORT_SIDE_PX = 720
# NHN returns one plate per image at most ("when there are several plates, the result for one
# plate is returned"); more only on request, for tests of the values[i]/boxes[i] pairing.
DEFAULT_MAX_PLATES = 1
MAX_PLATES_LIMIT = 16
# Share of images answered 4000201: in camera archives many frames show no plate.
NO_PLATE_SHARE = 0.25
# The shape of a 4000201 answer: the header alone (the default, see the package docstring), or
# also a ``result`` with fileType, resolution and empty values and boxes, for a client to be
# tested against both.
NO_PLATE_BODY_HEADER = "header"
NO_PLATE_BODY_RESULT = "result"
NO_PLATE_BODIES = (NO_PLATE_BODY_HEADER, NO_PLATE_BODY_RESULT)
CONF_MIN, CONF_MAX = 0.30, 0.99
# A Korean plate is 520 x 110 mm.
PLATE_ASPECT = 520 / 110
PLATE_SYLLABLES = tuple("가나다라마거너더러머버서어저고노도로모보소오조구누두루무부수우주하허호배")


def synthetic_result(
    data: bytes,
    width: int,
    height: int,
    file_type: str,
    *,
    max_plates: int = DEFAULT_MAX_PLATES,
    no_plate_share: float = NO_PLATE_SHARE,
) -> dict[str, Any]:
    """Return the ``result`` object for an image: its made-up plates, fixed by sha256(data).

    ``values`` is empty for an image in the ``no_plate_share`` (the emulator answers those
    4000201); the others get 1 plate, or 1..``max_plates``. An image with plates at one share
    keeps the same plates at any lower share, and its first plate does not depend on max_plates.
    """
    digest = hashlib.sha256(data).digest()
    count = plate_count(digest, max_plates=max_plates, no_plate_share=no_plate_share)
    w, h = max(width, 1), max(height, 1)
    values: list[dict[str, Any]] = []
    boxes: list[dict[str, int]] = []
    for index in range(count):
        # One independent 32-byte stream per plate keeps plates stable if max_plates changes.
        d = hashlib.sha256(digest + bytes([index])).digest()
        head = f"{d[1] % 100:02d}" if d[2] % 2 else f"{100 + int.from_bytes(d[1:3]) % 900}"
        syllable = PLATE_SYLLABLES[d[3] % len(PLATE_SYLLABLES)]
        tail = f"{int.from_bytes(d[4:6]) % 10000:04d}"
        conf = CONF_MIN + (CONF_MAX - CONF_MIN) * int.from_bytes(d[6:8]) / 0xFFFF
        values.append({"value": f"{head}{syllable}{tail}", "conf": round(conf, 4)})
        boxes.append(_plate_box(d, index, count, w, h))
    long_side, short_side = max(w, h), min(w, h)
    normal = long_side >= NORMAL_MIN_LONG_SIDE_PX and short_side >= NORMAL_MIN_SHORT_SIDE_PX
    return {
        "fileType": file_type,
        "values": values,
        "boxes": boxes,
        "resolution": "normal" if normal else "low",
    }


def plate_count(digest: bytes, *, max_plates: int, no_plate_share: float) -> int:
    """How many plates the image with this sha256 digest shows: 0, or 1..max_plates."""
    # The first 4 bytes as a fraction of 2**32: uniform, so the share of images below the
    # threshold is no_plate_share, and a lower share only gives plates to more images.
    if int.from_bytes(digest[:4]) < no_plate_share * 2**32:
        return 0
    return 1 + digest[4] % max_plates


def synthetic_answer(
    data: bytes,
    width: int,
    height: int,
    file_type: str,
    *,
    no_plate_body: str = NO_PLATE_BODY_HEADER,
    **options: Any,
) -> dict[str, Any]:
    """The whole answer for a valid image: SUCCESS with its plates, or 4000201 without any.

    ``options`` are synthetic_result's: max_plates, no_plate_share. ``no_plate_body`` is the
    shape of a 4000201 answer (see NO_PLATE_BODIES).
    """
    result = synthetic_result(data, width, height, file_type, **options)
    answer = image_decision(result, no_plate_body).answer()
    assert answer is not None  # an image's own answer always has a code
    return answer


def image_decision(result: dict[str, Any], no_plate_body: str, sha: str | None = None) -> Decision:
    if not result["values"]:
        kept = result if no_plate_body == NO_PLATE_BODY_RESULT else None
        return Decision(PLATE_NOT_FOUND, kept, sha)
    return Decision(SUCCESS, result, sha)


def _plate_box(d: bytes, index: int, count: int, w: int, h: int) -> dict[str, int]:
    # Each plate gets its own vertical strip of the image so that boxes never overlap.
    strip_px = w / count
    box_w = max(1, int(strip_px * (0.35 + 0.5 * d[8] / 255)))
    box_h = min(h - 1, max(1, round(box_w / PLATE_ASPECT)))
    x1 = int(index * strip_px + (strip_px - box_w) * d[9] / 255)
    y1 = int((h - 1 - box_h) * d[10] / 255)
    max_skew = box_h // 4  # a slight tilt, as a camera sees a plate
    skew = d[11] % (2 * max_skew + 1) - max_skew
    x2 = min(x1 + box_w, w - 1)

    def y(value: int) -> int:
        return min(max(value, 0), h - 1)

    # Clockwise from the top-left corner, as NHN numbers them.
    return dict(
        x1=x1, y1=y(y1), x2=x2, y2=y(y1 + skew),
        x3=x2, y3=y(y1 + box_h + skew), x4=x1, y4=y(y1 + box_h),
    )  # fmt: skip
