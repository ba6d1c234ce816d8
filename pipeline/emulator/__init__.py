"""A local server compatible with NHN Cloud's Vehicle Plate OCR API, for dry runs and tests.

It does NOT read plates in images. Every answer is synthetic, derived deterministically from the
sha256 of the uploaded bytes: the same file always gets the same answer. Like the live service, an
image has one plate at most: a share of images (``no_plate_share``, a quarter by default, chosen
by their bytes) is answered resultCode 4000201 VEHICLE_PLATE_NOT_FOUND, the others one plate with
its confidence and box (``max_plates`` > 1 gives up to that many, for tests of the pairing of
``values[i]`` with ``boxes[i]``). The only thing read from the image is its width and height (with
Pillow), to place the boxes inside it and to compute ``resolution``.

A 4000201 answer is the bare failure envelope, ``{"header": {...}}`` with isSuccessful false and
no ``result``: NHN's guide shows no failure body for this endpoint, and every failure body NHN
documents for its other APIs is the header alone. So a client learns nothing about a plate-less
image from the answer but its code (not even ``fileType`` or ``resolution``).

It follows the real service where a client can tell the difference: the route, the
``Authorization`` header, the multipart field ``image``, HTTP 200 for every answer with the
``header`` envelope, the result codes and the order in which they are checked.

For chaos and rate tests it can also misbehave on purpose, off by default: replace a fraction of
answers with faults (gateway errors, dropped connections, bad JSON, slow answers, server-side
result codes) and refuse calls above a call limit.

The modules, in the order a call meets them:

    command     `platepipe emulator`: options, serve until SIGINT/SIGTERM
    app         the aiohttp app: the endpoint and decide(), the order of the checks; /stats
    faults      the sliding-window call limit and the fault draws, and the faults' wire pages
    upload      the real service's checks of the upload: size, field, type, end, header
    synthetic   the made-up plates (or none) an image gets, from its bytes alone
    locate      with --locate-plates: the box of a marker drawn in the picture instead
    answers     result codes, NHN's messages, Decision -> the JSON envelope
    stats       what the server saw, per code, per fault, per second, per image
"""

from __future__ import annotations

from pipeline.emulator.answers import RESULT_MESSAGES
from pipeline.emulator.app import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    ENDPOINT_PATH,
    STATS_KEY,
    STATS_PATH,
    make_app,
    start_emulator,
)
from pipeline.emulator.command import emulator_command
from pipeline.emulator.stats import EmulatorStats
from pipeline.emulator.synthetic import (
    DEFAULT_MAX_PLATES,
    MAX_PLATES_LIMIT,
    NO_PLATE_BODIES,
    NO_PLATE_SHARE,
    PLATE_SYLLABLES,
    plate_count,
    synthetic_answer,
    synthetic_result,
)
from pipeline.emulator.upload import MAX_IMAGE_BYTES

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_PLATES",
    "DEFAULT_PORT",
    "ENDPOINT_PATH",
    "MAX_IMAGE_BYTES",
    "MAX_PLATES_LIMIT",
    "NO_PLATE_BODIES",
    "NO_PLATE_SHARE",
    "PLATE_SYLLABLES",
    "RESULT_MESSAGES",
    "STATS_KEY",
    "STATS_PATH",
    "EmulatorStats",
    "emulator_command",
    "make_app",
    "plate_count",
    "start_emulator",
    "synthetic_answer",
    "synthetic_result",
]
