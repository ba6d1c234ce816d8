"""Content, not paths, decides what is paid for (pipeline/dedupe.py): a picture whose bytes were
recognized already, any path, any job, is `done` from that result with no call; `copy_of`
points at the item that paid. Calls counted by the emulator, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from tests.support.cli import platepipe
from tests.support.corpus import make_image, sha256_file
from tests.support.db import query
from tests.support.reads import assert_reads_match

FAST = ("--rate", "400")


def distinct_tree(root: Path, n: int, *, seed: int = 0) -> list[Path]:
    paths = []
    for k in range(n):
        fmt, ext = ("JPEG", "jpg") if k % 2 else ("PNG", "png")
        path = root / "cam1" / f"p{k}.{ext}"
        make_image(path, 64, 48, fmt, seed=seed + k)
        paths.append(path)
    return paths


def copy_files(sources: list[Path], into: Path) -> list[Path]:
    into.mkdir(parents=True, exist_ok=True)
    copies = []
    for n, source in enumerate(sources):
        target = into / f"copy{n}{source.suffix}"
        shutil.copyfile(source, target)  # same bytes, a new mtime
        copies.append(target)
    return copies


def run(env: dict[str, str], emulator, *args: str, expect: int = 0) -> int:
    """Calls the emulator saw during `platepipe run ARGS`."""
    before = emulator.stats()["calls"]
    ran = platepipe("run", *args, *FAST, env=env)
    assert ran.returncode == expect, ran.stdout + ran.stderr
    return emulator.stats()["calls"] - before


def items_of(db_url: str, job: str) -> dict[str, tuple]:
    """path -> (id, status, sha256, copy_of, attempts rows)."""
    rows = query(
        db_url,
        "SELECT i.path, i.id, i.status, i.sha256, i.copy_of, "
        "(SELECT count(*) FROM attempts a WHERE a.item_id = i.id) "
        "FROM items i JOIN jobs j ON j.id = i.job_id WHERE j.name = :job",
        job=job,
    )
    return {path: tuple(rest) for path, *rest in rows}


def assert_payers(db_url: str, copies: dict[str, tuple]) -> None:
    """Each copy points at an item of the same content that paid: one call, no copy_of."""
    for path, (_id, status, sha256, copy_of, calls) in copies.items():
        assert status == "done" and calls == 0 and copy_of is not None, path
        ((payer_sha, payer_copy_of, payer_calls),) = query(
            db_url,
            "SELECT sha256, copy_of, (SELECT count(*) FROM attempts WHERE item_id = :id) "
            "FROM items WHERE id = :id",
            id=copy_of,
        )
        assert (payer_sha, payer_copy_of, payer_calls) == (sha256, None, 1), path


def test_copies_in_one_job_pay_once_and_point_at_their_payer(
    tmp_path, db_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    originals = distinct_tree(root, 6)
    copies = copy_files(originals[:3], root / "restored")
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}

    ran = platepipe("run", "--job", "J", str(root), *FAST, env=env)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert emulator.stats()["calls"] == 6
    assert "copies 3 (no call)" in ran.stdout
    found = items_of(db_url, "J")
    assert {p: found[p][2] for p in map(str, originals + copies)} == {
        str(p): sha256_file(p) for p in originals + copies
    }
    # Of each identical pair, either file may be started first and pay: one pays, one copies.
    for original, copy in zip(originals[:3], copies, strict=True):
        pair = {str(original): found[str(original)], str(copy): found[str(copy)]}
        (payer,) = [path for path, row in pair.items() if row[3] is None]
        (copied,) = [path for path in pair if path != payer]
        assert_payers(db_url, {copied: pair[copied]})
        assert pair[copied][3] == pair[payer][0]
    assert all(found[str(p)][3] is None for p in originals[3:])
    assert_reads_match(db_url, "J", tuple(originals + copies), emulator.stats()["answers"])


def test_copies_across_jobs_point_at_the_item_that_paid(
    tmp_path, db_url, start_emulator, platepipe_env
):
    first = distinct_tree(tmp_path / "night1", 4)
    second = [
        *copy_files(first, tmp_path / "night2"),
        *distinct_tree(tmp_path / "night2", 2, seed=9),
    ]
    third = copy_files(second[:2], tmp_path / "night3")  # copies of copies
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}

    assert run(env, emulator, "--job", "A", str(tmp_path / "night1")) == 4
    assert run(env, emulator, "--job", "B", str(tmp_path / "night2")) == 2
    assert run(env, emulator, "--job", "C", str(tmp_path / "night3")) == 0

    paid = items_of(db_url, "A")
    b_items, c_items = items_of(db_url, "B"), items_of(db_url, "C")
    assert_payers(db_url, {str(p): b_items[str(p)] for p in second[:4]})
    assert_payers(db_url, {str(p): c_items[str(p)] for p in third})
    # Copies of copies point at the payer in A, not at the copy they were found by.
    assert {c_items[str(p)][3] for p in third} == {paid[str(p)][0] for p in first[:2]}
    answers = emulator.stats()["answers"]
    assert_reads_match(db_url, "B", tuple(second), answers)
    assert_reads_match(db_url, "C", tuple(third), answers)
    # The ledger (`platepipe usage`) counts each job's calls and the copies it stored.
    ledger = query(
        db_url,
        "SELECT j.name, SUM(u.calls), SUM(u.copies) FROM usage u JOIN jobs j ON j.id = u.job_id "
        "GROUP BY j.name ORDER BY j.name",
    )
    assert [tuple(int(n) if not isinstance(n, str) else n for n in row) for row in ledger] == [
        ("A", 4, 0),
        ("B", 2, 4),
        ("C", 0, 2),
    ]


def test_touch_costs_nothing_and_changed_content_pays_once(
    tmp_path, db_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    images = distinct_tree(root, 5)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
    assert run(env, emulator, "--job", "J", str(root)) == 5
    before = query(db_url, "SELECT item_id, recognized_at FROM recognitions ORDER BY item_id")

    later = int(time.time()) + 60
    for path in images:
        os.utime(path, (later, later))  # as rsync without -t leaves them: content unchanged
    assert run(env, emulator, "--job", "J", str(root)) == 0

    after = items_of(db_url, "J")
    assert all(row[1] == "done" and row[3] is None and row[4] == 1 for row in after.values())
    assert query(db_url, "SELECT item_id, recognized_at FROM recognitions ORDER BY item_id") == (
        before
    )
    mtimes = query(db_url, "SELECT mtime FROM items ORDER BY id")
    assert {m for (m,) in mtimes} == {later}  # the next scan finds nothing new

    make_image(images[0], 64, 48, "PNG", seed=77)  # new content under the same path
    assert run(env, emulator, "--job", "J", str(root)) == 1
    assert items_of(db_url, "J")[str(images[0])][2] == sha256_file(images[0])
    assert_reads_match(db_url, "J", tuple(images), emulator.stats()["answers"])


def test_no_dedupe_pays_for_each_file_and_still_stores_its_content(
    tmp_path, db_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    originals = distinct_tree(root, 3)
    copies = copy_files(originals, root / "again")
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}

    assert run(env, emulator, "--job", "J", str(root), "--no-dedupe") == 6

    found = items_of(db_url, "J")
    assert all(row[3] is None and row[4] == 1 for row in found.values())
    assert {p: found[p][2] for p in found} == {str(p): sha256_file(p) for p in originals + copies}
    shas = query(db_url, "SELECT count(*) FROM recognitions WHERE sha256 IS NOT NULL")
    assert shas == [(6,)]


def test_duplicates_in_flight_at_once_pay_once(tmp_path, db_url, start_emulator, platepipe_env):
    root = tmp_path / "archive"
    (original,) = distinct_tree(root, 1)
    copies = copy_files([original] * 23, root / "burst")
    # Slow answers: every copy is claimed and read while the first call is still in flight.
    emulator = start_emulator("--latency", "0.5-0.5")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}

    assert run(env, emulator, "--job", "J", str(root), "--concurrency", "16") == 1

    found = items_of(db_url, "J")
    assert [row[1] for row in found.values()] == ["done"] * 24
    assert sum(row[3] is not None for row in found.values()) == 23
    assert_reads_match(db_url, "J", (original, *copies), emulator.stats()["answers"])


def test_skipped_and_failed_items_keep_their_content_but_are_never_copied(
    tmp_path, db_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    (root / "notes.jpg").parent.mkdir(parents=True)
    (root / "notes.jpg").write_text("not an image")
    (root / "notes2.jpg").write_text("not an image")
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}

    assert run(env, emulator, "--job", "J", str(root)) == 0

    found = items_of(db_url, "J")
    assert {row[1] for row in found.values()} == {"skipped"}
    assert {row[2] for row in found.values()} == {sha256_file(root / "notes.jpg")}
    assert query(db_url, "SELECT count(*) FROM recognitions") == [(0,)]


def test_the_dry_run_counts_copies_as_the_run_does(tmp_path, db_url, start_emulator, platepipe_env):
    first = distinct_tree(tmp_path / "night1", 4)
    night2 = tmp_path / "night2"
    copy_files(first[:3], night2 / "restore")  # recognized in another job: no call
    fresh = distinct_tree(night2, 3, seed=20)
    copy_files(fresh[:2] * 2, night2 / "twice")  # new content, twice more: paid once
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
    assert run(env, emulator, "--job", "A", str(tmp_path / "night1")) == 4

    planned = platepipe("run", "--job", "B", str(night2), "--dry-run", env=env)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    predicted = int(re.search(r"would make (\d+) calls", planned.stdout)[1])

    assert predicted == 3
    assert run(env, emulator, "--job", "B", str(night2)) == predicted
    unplanned = platepipe("run", "--job", "C", str(night2), "--dry-run", "--no-dedupe", env=env)
    assert "would make 10 calls" in unplanned.stdout, unplanned.stdout
