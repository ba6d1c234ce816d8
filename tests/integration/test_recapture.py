"""A `--capture-pattern` given on a later run dates the items already done, at no call; a
pattern that matches no path says so."""

from __future__ import annotations

from datetime import datetime

from tests.support.cli import platepipe
from tests.support.corpus import make_image
from tests.support.db import query

FAST = ("--rate", "400")
PATTERN = r"/(?P<camera>cam\d+)/(?P<date>\d{8})_(?P<time>\d{6})"


def test_a_later_capture_pattern_redates_known_items_at_no_call(
    tmp_path, db_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    frames = {
        root / "cam01" / "20261124_184214.jpg": ("cam01", datetime(2026, 11, 24, 18, 42, 14)),
        root / "cam02" / "20261125_010203.jpg": ("cam02", datetime(2026, 11, 25, 1, 2, 3)),
    }
    for n, path in enumerate(frames):
        make_image(path, 64, 48, "JPEG", seed=n)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
    first = platepipe("run", "--job", "J", str(root), *FAST, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert {c for (c,) in query(db_url, "SELECT camera FROM items")} == {None}

    nothing = platepipe(
        "run", "--job", "J", str(root), "--capture-pattern", r"(?P<camera>nosuch\d+)", *FAST,
        env=env,
    )  # fmt: skip
    later = platepipe("run", "--job", "J", str(root), "--capture-pattern", PATTERN, *FAST, env=env)

    assert nothing.returncode == 0, nothing.stdout + nothing.stderr
    assert "matched none of the 2 paths" in nothing.stderr
    assert later.returncode == 0, later.stdout + later.stderr
    assert "matched none" not in later.stderr
    assert "taken from the path for 2 items" in later.stdout
    assert emulator.stats()["calls"] == len(frames)
    stored = query(db_url, "SELECT path, status, camera, captured_at FROM items ORDER BY path")
    assert [(p, s, c, str(t)[:19]) for p, s, c, t in stored] == [
        (str(p), "done", camera, str(when)) for p, (camera, when) in sorted(frames.items())
    ]
