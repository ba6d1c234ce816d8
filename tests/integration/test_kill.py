"""kill -9 at any moment loses no committed result and never sends a done image again."""

from __future__ import annotations

import random
import signal
import time

from tests.support.cli import platepipe, start_platepipe
from tests.support.corpus import make_corpus, sha256_file
from tests.support.db import query
from tests.support.reads import assert_reads_match

N_IMAGES = 160
KILLS = 4
CONCURRENCY = 8
# Calls a killed run can lose: those in flight, plus answers the writer held for its short
# linger before their commit (a few at this rate), per kill.
LOST_PER_KILL = CONCURRENCY + 8


def _wait_for_calls(emulator, calls: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while emulator.stats()["calls"] < calls:
        assert time.monotonic() < deadline, "the run made no calls"
        time.sleep(0.02)


def _done_paths(db_url: str) -> set[str]:
    return {p for (p,) in query(db_url, "SELECT path FROM items WHERE status = 'done'")}


def test_kill_9_mid_run_loses_nothing(tmp_path, db_url, start_emulator, platepipe_env):
    corpus = make_corpus(tmp_path / "archive", N_IMAGES, large_every=0)
    emulator = start_emulator("--latency", "0.05-0.15")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
    args = ("run", "--job", "kill", str(corpus.root), "--rate", "60")
    args += ("--concurrency", str(CONCURRENCY))
    rng = random.Random(9)
    sha = {str(p): sha256_file(p) for p in corpus.images}
    calls_when_done: dict[str, int] = {}

    for _ in range(KILLS):
        calls_before = emulator.stats()["calls"]
        process = start_platepipe(*args, env=env)
        _wait_for_calls(emulator, calls_before + 5)
        time.sleep(rng.uniform(0.0, 0.6))
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        # An image done by now must never be called again.
        by_sha = emulator.stats()["by_sha256"]
        for path in _done_paths(db_url) - calls_when_done.keys():
            calls_when_done[path] = by_sha[sha[path]]

    assert 0 < len(calls_when_done) < N_IMAGES, "the kills should land mid-run"
    final = platepipe(*args, env=env)

    assert final.returncode == 0, final.stderr
    stats = emulator.stats()
    statuses = query(db_url, "SELECT status, count(*) FROM items GROUP BY status")
    assert dict(statuses) == {"done": len(corpus.images), "skipped": len(corpus.bad)}
    (recognitions,) = query(db_url, "SELECT count(*) FROM recognitions")[0]
    assert recognitions == len(corpus.images)
    assert_reads_match(db_url, "kill", corpus.images, stats["answers"])
    for path, calls in calls_when_done.items():
        assert stats["by_sha256"][sha[path]] == calls, f"{path} was sent again after done"
    extra = stats["calls"] - len(corpus.images)
    assert 0 <= extra <= KILLS * LOST_PER_KILL
    assert set(stats["by_sha256"]) == set(sha.values())


def test_sigterm_drains_and_exits_3_then_a_rerun_finishes(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 80, large_every=0)
    emulator = start_emulator("--latency", "0.2")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}
    args = ("run", "--job", "term", str(corpus.root), "--rate", "40", "--concurrency", "8")
    process = start_platepipe(*args, env=env)
    _wait_for_calls(emulator, 10)

    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 3, err
    assert "Traceback" not in err
    assert "run again to resume" in out
    # The drain committed every call it made: nothing is left running, no answer was dropped.
    calls = emulator.stats()["calls"]
    statuses = dict(query(sqlite_url, "SELECT status, count(*) FROM items GROUP BY status"))
    assert "running" not in statuses and statuses["pending"] > 0
    assert statuses["done"] == calls

    final = platepipe(*args, env=env)

    assert final.returncode == 0, final.stderr
    assert emulator.stats()["calls"] == len(corpus.images)
    assert_reads_match(sqlite_url, "term", corpus.images, emulator.stats()["answers"])


def test_a_second_ctrl_c_stops_at_once_and_stays_consistent(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 40, large_every=0)
    emulator = start_emulator("--latency", "4")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}
    args = ("run", "--job", "hurry", str(corpus.root), "--rate", "50", "--concurrency", "8")
    process = start_platepipe(*args, env=env)
    _wait_for_calls(emulator, 8)

    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=30)

    assert time.monotonic() - started < 3, "the second Ctrl-C should not wait for the calls"
    assert process.returncode == 3, err
    assert "Traceback" not in err
    statuses = dict(query(sqlite_url, "SELECT status, count(*) FROM items GROUP BY status"))
    assert "running" not in statuses and "failed" not in statuses
    final = platepipe(*args, "--concurrency", "40", env=env)
    assert final.returncode == 0, final.stderr
    assert_reads_match(sqlite_url, "hurry", corpus.images, emulator.stats()["answers"])
