"""`run --dry-run` predicts exactly the calls the run then makes (retries aside): the same
change detection, the same roots walked once, the same pre-flight checks, `--min-age`.
Each case counts the emulator's calls against the prediction, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import time

from tests.support.cli import platepipe
from tests.support.corpus import make_image

FAST = ("--rate", "400")


def predicted_calls(env: dict[str, str], *args: str) -> int:
    planned = platepipe("run", *args, "--dry-run", env=env)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    found = re.search(r"would make (\d+) calls", planned.stdout)
    assert found, planned.stdout
    return int(found[1])


def calls_of_run(env: dict[str, str], emulator, *args: str, expect: int = 0) -> int:
    before = emulator.stats()["calls"]
    ran = platepipe("run", *args, *FAST, env=env)
    assert ran.returncode == expect, ran.stdout + ran.stderr
    return emulator.stats()["calls"] - before


def test_dry_run_predicts_the_calls_after_touch_overlap_and_odd_files(
    tmp_path, db_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    for n in range(8):
        make_image(root / "cam1" / f"a{n}.jpg", 64, 48, "JPEG", seed=n)
        make_image(root / "cam2" / f"b{n}.png", 64, 48, "PNG", seed=50 + n)
    (root / "cam1" / "notes.jpg").write_text("not an image")
    (root / "cam2" / "zero.png").write_bytes(b"")
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
    job = ("--job", "J")

    # Fresh, with roots that overlap (the archive, one of its folders, the archive again).
    overlapping = (str(root), str(root / "cam1"), str(root))
    assert predicted_calls(env, *job, *overlapping) == 16
    assert calls_of_run(env, emulator, *job, *overlapping) == 16

    # Nothing changed: nothing to send.
    assert predicted_calls(env, *job, str(root)) == 0
    assert calls_of_run(env, emulator, *job, str(root)) == 0

    # Touched: every file changed since it was done, skipped or failed, and is queued again;
    # its content was recognized already, so it costs nothing (--no-dedupe sends it again).
    roots = (str(root / "cam1"), str(root))
    for sent, dedupe in ((0, "--dedupe"), (16, "--no-dedupe")):
        later = time.time() + 5 + sent
        for path in root.rglob("*"):
            if path.is_file():
                os.utime(path, (later, later))
        assert predicted_calls(env, *job, *roots, dedupe) == sent
        assert calls_of_run(env, emulator, *job, *roots, dedupe) == sent


def test_dry_run_counts_pending_items_from_earlier_scans_and_their_checks(
    tmp_path, db_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    for n in range(6):
        make_image(root / f"a{n}.jpg", 64, 48, "JPEG", seed=n)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
    scanned = platepipe("scan", "--job", "J", str(root), env=env)
    assert scanned.returncode == 0, scanned.stderr
    (root / "a0.jpg").unlink()  # vanished since the scan: skipped `missing`, no call
    (root / "a1.jpg").write_bytes(b"GIF89a not a jpeg")  # changed into a non-image

    assert predicted_calls(env, "--job", "J", "--max-requests", "3") == 3
    assert predicted_calls(env, "--job", "J") == 4
    assert calls_of_run(env, emulator, "--job", "J") == 4


def test_min_age_leaves_fresh_files_for_the_next_run(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    for n in range(5):
        make_image(root / f"old{n}.jpg", 64, 48, "JPEG", seed=n)
        os.utime(root / f"old{n}.jpg", (time.time() - 3600, time.time() - 3600))
    for n in range(3):
        make_image(root / f"new{n}.jpg", 64, 48, "JPEG", seed=10 + n)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}

    planned = platepipe("run", "--job", "J", str(root), "--min-age", "10m", "--dry-run", env=env)
    ran = platepipe("run", "--job", "J", str(root), "--min-age", "10m", *FAST, env=env)

    assert "would make 5 calls" in planned.stdout, planned.stdout
    assert "3 files modified within --min-age left for the next run" in planned.stdout
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert emulator.stats()["calls"] == 5
    assert "left for the next run: 3 files modified within --min-age" in ran.stdout

    later = platepipe("run", "--job", "J", str(root), *FAST, env=env)

    assert later.returncode == 0, later.stdout + later.stderr
    assert emulator.stats()["calls"] == 8
