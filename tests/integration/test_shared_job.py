"""Several `work` processes on one job through PostgreSQL: each item done exactly once, the
job's --rate shared, a dead worker's items taken over, a fatal answer stopping them all; and
the fleet as it really behaves: clocks that disagree, other hostnames, paused and stuck
workers, restarted containers, processes that all start at the same instant."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pipeline.store import HEARTBEAT_TIMEOUT_ENV
from tests.support.cli import platepipe, start_platepipe
from tests.support.corpus import make_corpus, sha256_file
from tests.support.db import query
from tests.support.reads import assert_reads_match

LIMIT_PER_S = 30
CONCURRENCY = 4
# Short, so that taking over a silent worker takes seconds, not the default 30; still long
# enough that a loaded test machine never looks silent that long.
TEST_HEARTBEAT_TIMEOUT_S = 4
# Answers a worker received but had not committed yet when paused: the writer's batch (its
# linger, and since issue 13 the usage ledger and copies in the same transaction). Up to 3
# were seen on a loaded 2-core machine, in 3 of 5 full runs; README's bound is in words.
UNSTORED_ANSWERS = 4
FLEET_RATE = 60  # the fleet tests' --rate, and the emulator's call limit
SKEW = "+40s"  # past the default heartbeat timeout, as on a camera-site box with NTP broken

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)"
)
needs_faketime = pytest.mark.skipif(
    not shutil.which("faketime"), reason="needs faketime (apt-get install faketime)"
)


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


def _start(*command: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        list(command), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _paid_per_image(emulator) -> dict[str, int]:
    """Answers the API gave per image, refusals for its call limit left out."""
    stats = emulator.stats()
    return stats["by_sha256"], stats["rate_limited"]


def _scanned(tmp_path, postgres_url, start_emulator, platepipe_env, images, *emulator_args):
    corpus = make_corpus(tmp_path / "archive", images, large_every=0)
    emulator = start_emulator(*emulator_args)
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": postgres_url}
    assert platepipe("scan", "--job", "fleet", str(corpus.root), env=env).returncode == 0
    return corpus, emulator, env


def _assert_each_done_once(postgres_url, corpus) -> None:
    counts = dict(query(postgres_url, "SELECT status, count(*) FROM items GROUP BY status"))
    assert counts == {"done": len(corpus.images), "skipped": len(corpus.bad)}
    (recognitions,) = query(postgres_url, "SELECT count(*) FROM recognitions")[0]
    assert recognitions == len(corpus.images)


def _finish(processes: list[subprocess.Popen[str]], timeout_s: float) -> list[str]:
    """Each process's stderr once it ended (killed if it had not within `timeout_s`)."""
    errors = []
    deadline = time.monotonic() + timeout_s
    for p in processes:
        try:
            errors.append(p.communicate(timeout=max(deadline - time.monotonic(), 1))[1])
        except subprocess.TimeoutExpired:
            p.kill()
            errors.append(p.communicate()[1])
    return errors


@needs_root
@needs_faketime
def test_a_worker_on_another_host_with_a_clock_40s_off_sends_nothing_twice(
    tmp_path, postgres_url, start_emulator, platepipe_env
):
    corpus, emulator, env = _scanned(
        tmp_path, postgres_url, start_emulator, platepipe_env, 150,
        "--rate-limit", str(FLEET_RATE), "--latency", "0.05-0.1",
    )  # fmt: skip
    work = ("-m", "pipeline", "work", "--job", "fleet", "--rate", str(FLEET_RATE))
    work += ("--concurrency", str(CONCURRENCY), "--quiet")
    # Another hostname (its own UTS namespace) and a wall clock 40 s ahead; its monotonic
    # clock is left alone, as NTP trouble leaves it.
    skewed_env = {**env, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    elsewhere = ("unshare", "-u", "sh", "-c", 'hostname fleet-b && exec "$@"', "sh")
    skewed = _start(*elsewhere, "faketime", "-f", SKEW, sys.executable, *work, env=skewed_env)
    here = _start(sys.executable, *work, env=env)
    try:
        ages = "SELECT host, extract(epoch FROM timezone('UTC', now()) - heartbeat_at) FROM workers"
        wait_until(lambda: len(query(postgres_url, ages)) == 2, 60, "both workers to register")
        beats = dict(query(postgres_url, ages))
    finally:
        errors = _finish([here, skewed], 120)

    assert [here.returncode, skewed.returncode] == [0, 0], errors
    assert not any("taking over" in e or "taken for dead" in e for e in errors), errors
    # Two hosts, each heartbeat stamped by the database's clock, not the worker's.
    assert set(beats) == {"fleet-b", os.uname().nodename}, beats
    assert all(-1 < float(age) < 5 for age in beats.values()), beats
    _assert_each_done_once(postgres_url, corpus)
    by_image, refused = _paid_per_image(emulator)
    # Every image answered once: the only repeats are calls the API refused for its limit.
    assert sum(by_image.values()) - refused == len(corpus.images)
    assert refused <= 0.01 * sum(by_image.values()), refused  # the shared rate held


@pytest.fixture
def short_timeout_env(platepipe_env):
    return {**platepipe_env, HEARTBEAT_TIMEOUT_ENV: str(TEST_HEARTBEAT_TIMEOUT_S)}


def test_a_worker_paused_past_the_timeout_pays_twice_only_its_calls_in_flight(
    tmp_path, postgres_url, start_emulator, short_timeout_env
):
    rate = FLEET_RATE
    corpus, emulator, env = _scanned(
        tmp_path, postgres_url, start_emulator, short_timeout_env, 240,
        "--rate-limit", str(rate), "--latency", "0.1-0.2",
    )  # fmt: skip
    args = ("work", "--job", "fleet", "--rate", str(rate), "--concurrency", str(CONCURRENCY))
    workers = [start_platepipe(*args, "--quiet", env=env) for _ in range(3)]
    paused = workers[1]
    try:
        wait_until(lambda: emulator.stats()["calls"] >= 60, 60, "the workers to get going")
        paused.send_signal(signal.SIGSTOP)  # a VM pause, a partition, a GC stall
        time.sleep(TEST_HEARTBEAT_TIMEOUT_S + 2)
        paused.send_signal(signal.SIGCONT)
        errors = _finish(workers, 120)
    finally:
        for w in workers:
            w.kill()
            w.communicate()

    assert [w.returncode for w in workers] == [0, 0, 0], errors
    assert "taken for dead" in errors[1], errors[1]
    _assert_each_done_once(postgres_url, corpus)
    by_image, refused = _paid_per_image(emulator)
    # Paid twice: the calls it had out when it stopped, and answers it had not stored yet
    # (at most a writer's linger of them, a call or two at this rate).
    twice = sum(by_image.values()) - refused - len(corpus.images)
    assert twice <= CONCURRENCY + UNSTORED_ANSWERS, (twice, refused, errors)


def test_a_worker_stuck_for_good_on_the_same_host_does_not_hold_up_the_job(
    tmp_path, postgres_url, start_emulator, short_timeout_env
):
    corpus, emulator, env = _scanned(
        tmp_path, postgres_url, start_emulator, short_timeout_env, 120,
        "--rate-limit", str(LIMIT_PER_S), "--latency", "0.1-0.2",
    )  # fmt: skip
    args = ("work", "--job", "fleet", "--rate", str(LIMIT_PER_S), "--concurrency", "4")
    healthy, stuck = (start_platepipe(*args, "--quiet", env=env) for _ in range(2))
    try:
        wait_until(lambda: emulator.stats()["calls"] >= 20, 60, "the workers to get going")
        # Stuck in the kernel, say: its pid lives on, its heartbeat stops.
        stuck.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        shown = platepipe("status", "--job", "fleet", env=env)
        assert shown.returncode == 0, shown.stderr
        for pid in (healthy.pid, stuck.pid):  # until the timeout, both are shown
            assert f"live: `work` pid {pid} on " in shown.stdout, shown.stdout
        (err,) = _finish([healthy], TEST_HEARTBEAT_TIMEOUT_S + 60)
        finished_after_s = time.monotonic() - stopped_at
    finally:
        stuck.kill()
        stuck.communicate()
        healthy.kill()
        healthy.communicate()

    assert healthy.returncode == 0, err
    assert "taking over from `work` pid" in err, err
    assert finished_after_s <= TEST_HEARTBEAT_TIMEOUT_S + 60
    _assert_each_done_once(postgres_url, corpus)


@needs_root
def test_a_run_restarted_as_pid_1_of_a_new_pid_namespace_finishes_the_job(
    tmp_path, postgres_url, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 40, large_every=0)
    emulator = start_emulator("--latency", "0.1")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": postgres_url}
    # As in a container: every start is pid 1, and the previous one's pid is ours.
    container = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL")
    run = (sys.executable, "-m", "pipeline", "run", "--job", "box", str(corpus.root))
    first = _start(*container, *run, "--rate", "10", "--concurrency", "2", env=env)
    try:
        wait_until(lambda: emulator.stats()["calls"] >= 5, 60, "the first run to get going")
        assert query(postgres_url, "SELECT pid FROM workers") == [(1,)]
    finally:
        first.kill()  # unshare, and with it (PDEATHSIG) its pid 1: a container killed
        first.communicate()
    assert query(postgres_url, "SELECT pid FROM workers") == [(1,)]  # left behind

    second = _start(*container, *run, "--rate", "100", env=env)
    (err,) = _finish([second], 120)

    assert second.returncode == 0, err
    assert "taking over from `run` pid 1" in err, err
    _assert_each_done_once(postgres_url, corpus)


def test_four_scans_on_a_fresh_database_at_once_all_succeed(tmp_path, postgres_url, platepipe_env):
    corpus = make_corpus(tmp_path / "archive", 30, large_every=0)
    env = {**platepipe_env, "PLATEPIPE_DB": postgres_url}
    scans = [start_platepipe("scan", "--job", "j", str(corpus.root), env=env) for _ in range(4)]
    errors = _finish(scans, 120)

    assert [s.returncode for s in scans] == [0, 0, 0, 0], errors
    (items, paths) = query(postgres_url, "SELECT count(*), count(DISTINCT path) FROM items")[0]
    assert items == paths == len(corpus.scannable)


def test_two_runs_started_at_once_one_runs_and_one_exits_1(
    tmp_path, postgres_url, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 30, large_every=0)
    emulator = start_emulator("--latency", "0.1")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": postgres_url}
    args = ("run", "--job", "j", str(corpus.root), "--rate", "20", "--concurrency", "2")
    runs = [start_platepipe(*args, env=env) for _ in range(2)]
    errors = _finish(runs, 120)

    assert sorted(r.returncode for r in runs) == [0, 1], errors
    refused = errors[[r.returncode for r in runs].index(1)]
    assert "is being processed by pid" in refused, refused
    _assert_each_done_once(postgres_url, corpus)
