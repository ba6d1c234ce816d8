"""Pictures over the API's 5 MB, end to end on SQLite and PostgreSQL with the real emulator
(`--locate-plates`: it answers the box of the marker drawn in what it was sent): each is fitted,
sent once, and its box lands on the marker in the original's pixels; `--no-fit` skips them;
what does not decode, and a decompression bomb, are skipped with a reason and no call."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pipeline.preflight import MAX_IMAGE_BYTES
from tests.integration.test_docs import readme_queries
from tests.support.cli import platepipe
from tests.support.db import query
from tests.support.pictures import (
    Box,
    bomb_png,
    noise_jpeg,
    noise_png,
    small_jpeg,
    undecodable_jpeg,
)

BOX_TOLERANCE = 0.01  # of the original's side
FAST = ("--rate", "100")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Box]]:
    """A folder of two big pictures with markers (made once: noise takes CPU), a small one,
    a big file that does not decode and a bomb; the markers' boxes by file name."""
    root = tmp_path_factory.mktemp("big")
    boxes = {
        "big.png": noise_png(root / "big.png"),
        "big.jpg": noise_jpeg(root / "big.jpg"),
        "small.jpg": small_jpeg(root / "small.jpg"),
    }
    undecodable_jpeg(root / "garbage.jpg")
    bomb_png(root / "bomb.png")
    for name in ("big.png", "big.jpg", "garbage.jpg", "bomb.png"):
        assert (root / name).stat().st_size > MAX_IMAGE_BYTES, name
    return root, boxes


@pytest.fixture
def tree(pictures: tuple[Path, dict[str, Box]], tmp_path: Path) -> Path:
    """This test's own copy (items keep their paths per database, files are shared)."""
    return Path(shutil.copytree(pictures[0], tmp_path / "archive"))


def predicted_calls(env: dict[str, str], *args: str) -> int:
    planned = platepipe("run", *args, "--dry-run", env=env)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    return int(re.search(r"would make (\d+) calls", planned.stdout)[1])  # type: ignore[index]


def test_big_pictures_are_fitted_sent_once_and_their_boxes_land_on_the_original(
    tree, pictures, db_url, start_emulator, platepipe_env
):
    boxes = pictures[1]
    emulator = start_emulator("--locate-plates")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
    assert predicted_calls(env, "--job", "fit", str(tree)) == 3

    ran = platepipe("run", "--job", "fit", str(tree), *FAST, env=env)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert emulator.stats()["calls"] == 3  # one each: big.png, big.jpg, small.jpg
    items = {
        Path(path).name: (status, code, message)
        for path, status, code, message in query(
            db_url, "SELECT path, status, error_code, error_message FROM items"
        )
    }
    assert {name: status_code[:2] for name, status_code in items.items()} == {
        "big.png": ("done", None),
        "big.jpg": ("done", None),
        "small.jpg": ("done", None),
        "garbage.jpg": ("skipped", "undecodable"),
        "bomb.png": ("skipped", "too_many_pixels"),
    }
    assert "30000x30000" in items["bomb.png"][2]
    reads = query(
        db_url,
        "SELECT path, x1, y1, x2, y2, x3, y3, x4, y4, resolution FROM plate_reads",
    )
    sizes = {"big.png": (4000, 3000), "big.jpg": (1440, 1080), "small.jpg": (640, 480)}
    assert sorted(Path(r[0]).name for r in reads) == sorted(sizes)
    for path, *corners, resolution in reads:
        name = Path(path).name
        width, height = sizes[name]
        left, top, right, bottom = boxes[name]
        expected = (left, top, right, top, right, bottom, left, bottom)
        errors = [
            abs(got - want) / (width if index % 2 == 0 else height)
            for index, (got, want) in enumerate(zip(corners, expected, strict=True))
        ]
        assert max(errors) <= BOX_TOLERANCE, (name, corners, expected)
        assert resolution == ("low" if name == "small.jpg" else "normal")  # the original's
    fits = {
        Path(path).name: (fit_bytes, scale, quality)
        for path, fit_bytes, scale, quality in query(
            db_url,
            "SELECT i.path, r.fit_bytes, r.fit_scale, r.fit_quality FROM recognitions r "
            "JOIN items i ON i.id = r.item_id",
        )
    }
    assert fits["small.jpg"] == (None, None, None)
    png_bytes, png_scale, png_quality = fits["big.png"]
    assert png_bytes <= MAX_IMAGE_BYTES and png_scale < 1.0 and png_quality == 60  # downscaled
    jpg_bytes, jpg_scale, jpg_quality = fits["big.jpg"]
    assert jpg_bytes <= MAX_IMAGE_BYTES and jpg_scale == 1.0 and jpg_quality == 90  # re-encoded

    fitted = query(db_url, readme_queries()["Pictures fitted to the API's 5 MB, and what was sent"])
    assert sorted((Path(p).name, b, s, q) for p, b, s, q in fitted) == sorted(
        (name, *fits[name]) for name in ("big.png", "big.jpg")
    )

    again = platepipe("run", "--job", "fit", str(tree), *FAST, env=env)
    assert again.returncode == 0, again.stderr
    assert emulator.stats()["calls"] == 3  # nothing new: a fitted picture is not sent again


def test_no_fit_skips_big_pictures_as_too_large_with_no_call(
    tree, db_url, start_emulator, platepipe_env
):
    emulator = start_emulator("--locate-plates")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
    assert predicted_calls(env, "--job", "nofit", "--no-fit", str(tree)) == 1

    ran = platepipe("run", "--job", "nofit", "--no-fit", str(tree), *FAST, env=env)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert emulator.stats()["calls"] == 1  # small.jpg alone
    items = {
        Path(path).name: (status, code)
        for path, status, code in query(db_url, "SELECT path, status, error_code FROM items")
    }
    assert items == {
        "small.jpg": ("done", None),
        **{
            name: ("skipped", "too_large")
            for name in ("big.png", "big.jpg", "garbage.jpg", "bomb.png")
        },
    }
