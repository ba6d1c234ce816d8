"""Every documented result code, as the live service answers it, costs what SPEC says and ends
where SPEC says: plate-less pictures are results bought once, NHN's upstream limit slows the
pool like the call limit, and a code that no call can get past stops the run at once."""

from __future__ import annotations

import pytest

from tests.support.cli import platepipe
from tests.support.corpus import make_corpus
from tests.support.db import query
from tests.support.reads import assert_reads_match

CONCURRENCY = 4


def statuses(db_url: str) -> dict[str, int]:
    return dict(query(db_url, "SELECT status, count(*) FROM items GROUP BY status"))


def test_plate_less_pictures_are_bought_once_and_done(
    tmp_path, db_url, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 48, large_every=0)
    emulator = start_emulator()  # as the live service: about a quarter without a plate
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}

    result = platepipe("run", "--job", "night", str(corpus.root), "--rate", "50", env=env)

    assert result.returncode == 0, result.stderr
    stats = emulator.stats()
    no_plate = stats["by_code"].get("4000201", 0)
    assert no_plate >= 5, "the corpus should hold plate-less pictures"
    assert stats["calls"] == len(corpus.images)  # exactly one call a picture
    assert statuses(db_url) == {"done": len(corpus.images), "skipped": len(corpus.bad)}
    # SQL tells a plate-less picture from one never sent: a recognition with the code kept.
    rows = query(
        db_url,
        "SELECT count(*) FROM items JOIN recognitions ON recognitions.item_id = items.id "
        "WHERE items.status = 'done' AND recognitions.result_code = 4000201 "
        "AND NOT EXISTS (SELECT 1 FROM plates WHERE plates.item_id = items.id)",
    )
    assert rows == [(no_plate,)]
    (with_reads,) = query(db_url, "SELECT count(DISTINCT path) FROM plate_reads")[0]
    assert with_reads == len(corpus.images) - no_plate
    assert_reads_match(db_url, "night", corpus.images, stats["answers"])
    again = platepipe("run", "--job", "night", str(corpus.root), env=env)
    assert again.returncode == 0, again.stderr
    assert emulator.stats()["calls"] == len(corpus.images)  # nothing bought twice


def test_a_plate_seen_but_not_read_is_done_and_kept_for_review(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 10, large_every=0)
    emulator = start_emulator("--fault-rate", "1", "--faults", "5004003")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}

    result = platepipe("run", "--job", "review", str(corpus.root), env=env)

    assert result.returncode == 0, result.stderr
    assert emulator.stats()["calls"] == len(corpus.images)
    assert statuses(sqlite_url) == {"done": len(corpus.images), "skipped": len(corpus.bad)}
    assert query(sqlite_url, "SELECT DISTINCT result_code FROM recognitions") == [(5004003,)]
    assert query(sqlite_url, "SELECT count(*) FROM plate_reads") == [(0,)]


@pytest.mark.parametrize("limit_code", ["4000006", "5000503"])
def test_the_upstream_limit_slows_the_pool_as_the_call_limit_does(
    tmp_path, sqlite_url, start_emulator, platepipe_env, limit_code
):
    corpus = make_corpus(tmp_path / "archive", 80, large_every=0)
    emulator = start_emulator("--rate-limit", "10", "--limit-code", limit_code)
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}

    result = platepipe(
        "run", "--job", "limited", str(corpus.root), "--rate", "40", "--concurrency", "8",
        env=env, timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert statuses(sqlite_url) == {"done": len(corpus.images), "skipped": len(corpus.bad)}
    stats = emulator.stats()
    assert stats["by_code"].get(limit_code, 0) > 0, "the limit should have been hit"
    # The pool converges on the limit instead of paying for refusals image by image.
    assert stats["calls"] <= 1.5 * len(corpus.images), stats["calls"]
    assert query(sqlite_url, "SELECT max(attempts) FROM items") == [(1,)]
    assert f"call limit was hit ({limit_code})" in result.stderr


FATAL_CODES = [
    "4000005", "4000401", "4010002", "4010003", "4010004", "4010005", "401", "403", "404", "405",
]  # fmt: skip


@pytest.mark.parametrize("code", FATAL_CODES)
def test_a_fatal_code_stops_the_run_at_once_and_fails_nothing(
    tmp_path, sqlite_url, start_emulator, platepipe_env, secret_key, code
):
    corpus = make_corpus(tmp_path / "archive", 30, large_every=0)
    emulator = start_emulator("--fault-rate", "1", "--faults", code)
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}

    result = platepipe(
        "run", "--job", "refused", str(corpus.root), "--concurrency", str(CONCURRENCY),
        "--rate", "50", env=env, timeout=60,
    )  # fmt: skip

    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and code in lines[-1] and "Traceback" not in result.stderr
    assert secret_key not in result.stderr + result.stdout
    assert emulator.stats()["calls"] <= CONCURRENCY  # at most the calls in flight
    counts = statuses(sqlite_url)
    assert set(counts) <= {"pending", "skipped"}  # nothing failed, nothing bought
    assert counts["pending"] >= len(corpus.images)
