"""Several `work` processes on one job through PostgreSQL: each item done exactly once, the
job's --rate shared, a dead worker's items taken over, a fatal answer stopping them all."""

from __future__ import annotations

import signal
import time

from tests.support.cli import platepipe, start_platepipe
from tests.support.corpus import make_corpus, sha256_file
from tests.support.db import query
from tests.support.reads import assert_reads_match

LIMIT_PER_S = 30
CONCURRENCY = 4


def wait_until(condition, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"timed out waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - started


def test_three_workers_share_the_job_and_survive_one_killed(
    tmp_path, postgres_url, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 360, large_every=0)
    emulator = start_emulator("--rate-limit", str(LIMIT_PER_S), "--latency", "0.05-0.1")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": postgres_url}
    scanned = platepipe("scan", "--job", "shared", str(corpus.root), env=env)
    assert scanned.returncode == 0, scanned.stderr
    assert emulator.stats()["calls"] == 0
    args = ("work", "--job", "shared", "--rate", str(LIMIT_PER_S))
    args += ("--concurrency", str(CONCURRENCY), "--quiet")
    workers = [start_platepipe(*args, env=env) for _ in range(3)]
    try:
        wait_until(lambda: emulator.stats()["calls"] >= 60, 60, "the workers to get going")
        (victim_id,) = query(
            postgres_url, "SELECT id FROM workers WHERE pid = :pid", pid=workers[1].pid
        )[0]
        busy = platepipe("run", "--job", "shared", env=env)
        assert busy.returncode == 1 and "`work`" in busy.stderr  # a lone run must wait
        workers[1].send_signal(signal.SIGKILL)
        taken_over_s = wait_until(
            lambda: (
                not query(
                    postgres_url,
                    "SELECT 1 FROM items WHERE status = 'running' AND lease_owner = :w",
                    w=victim_id,
                )
            ),
            60,
            "the dead worker's items to be taken over",
        )
        results = [w.communicate(timeout=120) for w in (workers[0], workers[2])]
    finally:
        for w in workers:
            w.kill()
            w.communicate()

    assert [workers[0].returncode, workers[2].returncode] == [0, 0], results
    assert taken_over_s <= 60
    stats = emulator.stats()
    counts = dict(query(postgres_url, "SELECT status, count(*) FROM items GROUP BY status"))
    assert counts == {"done": len(corpus.images), "skipped": len(corpus.bad)}
    (recognitions,) = query(postgres_url, "SELECT count(*) FROM recognitions")[0]
    assert recognitions == len(corpus.images)
    assert_reads_match(postgres_url, "shared", corpus.images, stats["answers"])
    # Sent twice only what the killed worker had in flight or unwritten.
    twice = [p for p in corpus.images if stats["by_sha256"][sha256_file(p)] > 1]
    assert len(twice) <= CONCURRENCY * 2 + 8
    # The three kept to the job's rate between them.
    assert stats["rate_limited"] <= 0.01 * stats["calls"], stats["rate_limited"]


def test_a_fatal_answer_in_one_worker_stops_them_all(
    tmp_path, postgres_url, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 60, large_every=0)
    emulator = start_emulator("--latency", "0.3")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": postgres_url}
    assert platepipe("scan", "--job", "halt", str(corpus.root), env=env).returncode == 0
    good = start_platepipe("work", "--job", "halt", "--rate", "5", "--concurrency", "1", env=env)
    wait_until(lambda: emulator.stats()["calls"] >= 1, 30, "the good worker to start")

    bad_env = {**env, "NHN_OCR_SECRET_KEY": "revoked-key"}
    bad = platepipe("work", "--job", "halt", "--rate", "5", env=bad_env, timeout=60)
    _out, err = good.communicate(timeout=30)

    assert bad.returncode == 1 and "4010001" in bad.stderr
    assert good.returncode == 1, err
    assert "4010001" in err and "Traceback" not in err
    counts = dict(query(postgres_url, "SELECT status, count(*) FROM items GROUP BY status"))
    assert "failed" not in counts and "running" not in counts
