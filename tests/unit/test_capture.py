"""Capture metadata: camera and time from the path pattern, from EXIF, from mtime."""

from __future__ import annotations

import io
from datetime import datetime

import pytest
from PIL import Image

from pipeline.capture import PathPattern, PatternError, _when, exif_taken_at, from_mtime

PATTERN = r"(?P<camera>cam\d+)/(?P<date>\d{8})_(?P<time>\d{6})"


@pytest.mark.parametrize(
    ("date", "time", "expected"),
    [
        ("2026-11-24", "23:15:02", datetime(2026, 11, 24, 23, 15, 2)),
        ("20261124", "231502", datetime(2026, 11, 24, 23, 15, 2)),
        ("2026-11-24", "2315", datetime(2026, 11, 24, 23, 15)),
        ("20261124", "23:15", datetime(2026, 11, 24, 23, 15)),
        ("2026/11/24", None, datetime(2026, 11, 24)),
        ("20261124", "", datetime(2026, 11, 24)),
    ],
)
def test_dates_and_times_in_paths(date, time, expected) -> None:
    assert _when(date, time) == expected


@pytest.mark.parametrize(
    ("date", "time"),
    [
        ("20261324", "231502"),  # month 13
        ("2026-02-30", None),  # no such day
        ("2026112", "231502"),  # seven digits
        ("202611245", None),  # nine digits
        ("", "231502"),
        (None, "231502"),
        ("20261124", "2575"),  # minute 75
        ("20261124", "246000"),  # hour 24
    ],
)
def test_bad_dates_give_no_time(date, time) -> None:
    assert _when(date, time) is None


def test_a_pattern_finds_camera_and_time_in_the_path() -> None:
    pattern = PathPattern.parse(PATTERN)
    assert pattern is not None

    found = pattern.match("/archive/night/cam07/20261124_231502.jpg")

    assert found == ("cam07", datetime(2026, 11, 24, 23, 15, 2))


def test_a_path_the_pattern_misses_tells_nothing() -> None:
    pattern = PathPattern.parse(PATTERN)
    assert pattern is not None

    assert pattern.match("/archive/night/frame_0001.jpg") == (None, None)


def test_a_camera_only_pattern_leaves_the_time_open() -> None:
    pattern = PathPattern.parse(r"/(?P<camera>gate-\w+)/")
    assert pattern is not None

    assert pattern.match("/archive/gate-north/IMG_1.jpg") == ("gate-north", None)


def test_a_date_only_pattern_with_a_bad_date_gives_neither() -> None:
    pattern = PathPattern.parse(r"(?P<date>\d{4}-\d{2}-\d{2})")
    assert pattern is not None

    assert pattern.match("/archive/2026-13-01/x.jpg") == (None, None)
    assert pattern.match("/archive/2026-11-24/x.jpg") == (None, datetime(2026, 11, 24))


@pytest.mark.parametrize("text", [None, ""])
def test_no_pattern_is_no_pattern(text) -> None:
    assert PathPattern.parse(text) is None


@pytest.mark.parametrize("text", ["(?P<camera>", "[", r"(?P<x>\d+)", r"cam\d+"])
def test_unusable_patterns_are_errors(text) -> None:
    with pytest.raises(PatternError, match="capture pattern"):
        PathPattern.parse(text)


def _jpeg(exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    image = Image.new("RGB", (64, 48), (10, 20, 30))
    if exif is None:
        image.save(buf, "JPEG")
    else:
        image.save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def test_exif_date_time_original() -> None:
    exif = Image.Exif()
    exif[306] = "2024:05:06 07:08:09"  # DateTime: DateTimeOriginal wins over it
    exif.get_ifd(0x8769)[36867] = "2025:01:02 03:04:05"

    assert exif_taken_at(_jpeg(exif)) == datetime(2025, 1, 2, 3, 4, 5)


def test_exif_date_time_when_there_is_no_original() -> None:
    exif = Image.Exif()
    exif[306] = "2024:05:06 07:08:09"

    assert exif_taken_at(_jpeg(exif)) == datetime(2024, 5, 6, 7, 8, 9)


def test_no_or_garbled_exif_gives_no_time() -> None:
    garbled = Image.Exif()
    garbled.get_ifd(0x8769)[36867] = "0000:00:00 00:00:00"

    assert exif_taken_at(_jpeg()) is None
    assert exif_taken_at(_jpeg(garbled)) is None
    assert exif_taken_at(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00broken") is None


def test_mtime_is_local_wall_clock_time() -> None:
    assert from_mtime(1_700_000_000) == datetime.fromtimestamp(1_700_000_000)
