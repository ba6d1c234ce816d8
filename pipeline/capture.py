"""Where and when a picture was taken: camera id and capture time.

From the path first, with the operator's pattern (a regular expression with named groups
`camera`, `date` and `time`, searched in the absolute path), else from the JPEG's EXIF
DateTimeOriginal, else from the file's mtime. Times are the camera's local wall-clock time,
as archives record them.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from datetime import datetime

from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 36867
DATETIME = 306
EXIF_MARKER = b"Exif\x00\x00"
EXIF_SEARCH_BYTES = 64 * 1024  # APP1 comes first in camera JPEGs; no need to look further


class PatternError(ValueError):
    """The capture pattern is not a usable regular expression."""


@dataclass(frozen=True)
class PathPattern:
    regex: re.Pattern[str]

    @classmethod
    def parse(cls, pattern: str | None) -> PathPattern | None:
        if not pattern:
            return None
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise PatternError(f"capture pattern {pattern!r}: {exc}") from exc
        if not {"camera", "date"} & set(regex.groupindex):
            raise PatternError(f"capture pattern {pattern!r} names no group camera or date")
        return cls(regex)

    def match(self, path: str) -> tuple[str | None, datetime | None]:
        """(camera, captured_at) as far as the path tells them."""
        found = self.regex.search(path)
        if found is None:
            return None, None
        groups = found.groupdict()
        return groups.get("camera") or None, _when(groups.get("date"), groups.get("time"))


def _when(date: str | None, time: str | None) -> datetime | None:
    """`2026-11-24` / `20261124` and `23:59:07` / `235907` / `2359` into a datetime."""
    digits = re.sub(r"\D", "", date or "")
    if len(digits) != 8:
        return None
    clock = re.sub(r"\D", "", time or "").ljust(6, "0")[:6]
    try:
        return datetime.strptime(digits + clock, "%Y%m%d%H%M%S")
    except ValueError:
        return None


def exif_taken_at(data: bytes) -> datetime | None:
    """DateTimeOriginal (else DateTime) of a JPEG's EXIF, None when it has none."""
    if EXIF_MARKER not in data[:EXIF_SEARCH_BYTES]:
        return None  # most frames: no Pillow at all
    try:
        with Image.open(io.BytesIO(data)) as image:
            exif = image.getexif()
            stamp = exif.get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL) or exif.get(DATETIME)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        log.debug("unreadable EXIF: %s", exc)
        return None
    try:
        return datetime.strptime(str(stamp).strip("\x00 "), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def from_mtime(mtime: float) -> datetime:
    return datetime.fromtimestamp(mtime)
