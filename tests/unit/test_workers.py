"""Unit tests of the workers' pure parts (pipeline/workers.py): the retry policy, the request
limiter's spacing, and the pool's reads (ahead, stuck, and what an item records of them)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pipeline import workers
from pipeline.concurrency import START_LIMIT, ConcurrencyLimit
from pipeline.pacing import Breaker, RateGovernor
from pipeline.preflight import JPEG_MAGIC, Read, in_daemon_thread, read_checked
from pipeline.records import Answer, ClaimedItem, Plate, Recognition, utcnow
from pipeline.verdicts import Verdict
from pipeline.workers import UNKNOWN_CODE_MAX_ATTEMPTS, RetryPolicy, WorkerPool

MAX_ATTEMPTS = 5
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 60.0
POLICY = RetryPolicy(MAX_ATTEMPTS, BACKOFF_BASE_S, BACKOFF_CAP_S)
RECOGNITION = Recognition("jpg", "normal", (Plate("12가3456", 0.9, None),), raw="{}")
NOW = datetime(2024, 1, 1, 3, 0, 0)


def _item(attempts: int = 0) -> ClaimedItem:
    return ClaimedItem(id=42, path="/archive/a.jpg", size=10, mtime=0.0, attempts=attempts)


def _answer(verdict: Verdict, code: str, message: str = "why") -> Answer:
    recognition = RECOGNITION if verdict.recognized else None
    made = Answer(code, message, latency_s=0.25, http_status=200, recognition=recognition)
    assert made.verdict is verdict, (code, made.verdict)
    return made


# --- RetryPolicy.outcome --------------------------------------------------------------------


@pytest.mark.parametrize("attempts", [0, 3, MAX_ATTEMPTS + 2])
def test_done_records_the_recognition(attempts: int) -> None:
    outcome = POLICY.outcome(_item(attempts), _answer(Verdict.DONE, "0", "SUCCESS"), NOW)

    assert outcome.item_id == 42
    assert outcome.status == "done"
    assert outcome.attempts == attempts + 1
    assert outcome.recognition is RECOGNITION
    assert outcome.error_code is None
    assert outcome.next_attempt_at is None
    assert outcome.call.answer.latency_s == 0.25
    assert (outcome.call.started_at, outcome.call.result) == (NOW, "done")


def test_permanent_fails_at_the_first_attempt() -> None:
    outcome = POLICY.outcome(_item(0), _answer(Verdict.PERMANENT, "4000002", "invalid file"), NOW)

    assert outcome.status == "failed"
    assert outcome.attempts == 1
    assert outcome.error_code == "4000002"
    assert outcome.error_message == "invalid file"
    assert outcome.next_attempt_at is None
    assert outcome.recognition is None
    assert outcome.call.result == "failed"


@pytest.mark.parametrize("previous", range(MAX_ATTEMPTS - 1))
def test_retry_below_max_attempts_is_pending_with_backoff(previous: int) -> None:
    before = utcnow()

    outcome = POLICY.outcome(
        _item(previous), _answer(Verdict.OUTAGE, "http_502", "bad gateway"), NOW
    )

    after = utcnow()
    attempts = previous + 1
    ceiling = timedelta(seconds=min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempts - 1)))
    assert outcome.status == "pending"
    assert outcome.attempts == attempts
    assert outcome.error_code == "http_502"
    assert outcome.error_message == "bad gateway"
    assert outcome.next_attempt_at is not None
    assert before <= outcome.next_attempt_at <= after + ceiling
    assert outcome.call.result == "retry"


def test_retry_at_max_attempts_fails() -> None:
    outcome = POLICY.outcome(
        _item(MAX_ATTEMPTS - 1), _answer(Verdict.OUTAGE, "timeout", "slow"), NOW
    )

    assert outcome.status == "failed"
    assert outcome.attempts == MAX_ATTEMPTS
    assert outcome.error_code == "timeout"
    assert outcome.next_attempt_at is None


def test_retry_past_max_attempts_fails() -> None:
    # `retry` may put back an item that already used its attempts: one more try, then failed.
    outcome = POLICY.outcome(_item(MAX_ATTEMPTS + 3), _answer(Verdict.OUTAGE, "http_503"), NOW)

    assert outcome.status == "failed"
    assert outcome.attempts == MAX_ATTEMPTS + 4


def test_unknown_codes_are_capped_below_max_attempts() -> None:
    assert UNKNOWN_CODE_MAX_ATTEMPTS < MAX_ATTEMPTS
    unknown = _answer(Verdict.UNKNOWN, "1234567", "what is this")

    before_cap = POLICY.outcome(_item(UNKNOWN_CODE_MAX_ATTEMPTS - 2), unknown, NOW)
    at_cap = POLICY.outcome(_item(UNKNOWN_CODE_MAX_ATTEMPTS - 1), unknown, NOW)

    assert before_cap.status == "pending"
    assert before_cap.next_attempt_at is not None
    assert at_cap.status == "failed"
    assert at_cap.attempts == UNKNOWN_CODE_MAX_ATTEMPTS
    assert at_cap.error_code == "1234567"
    assert at_cap.error_message == "what is this"


def test_unknown_codes_respect_a_lower_max_attempts() -> None:
    policy = RetryPolicy(1, BACKOFF_BASE_S, BACKOFF_CAP_S)

    outcome = policy.outcome(_item(0), _answer(Verdict.UNKNOWN, "1234567"), NOW)

    assert outcome.status == "failed"


@pytest.mark.parametrize("attempts", [0, 2])
def test_fatal_leaves_the_item_pending_and_untouched(attempts: int) -> None:
    outcome = POLICY.outcome(_item(attempts), _answer(Verdict.FATAL, "4010001", "bad key"), NOW)

    assert outcome.status == "pending"
    assert outcome.attempts == attempts
    assert outcome.next_attempt_at is None
    assert outcome.recognition is None
    assert outcome.call.result == "fatal"


@pytest.mark.parametrize("attempts", [0, MAX_ATTEMPTS - 1, MAX_ATTEMPTS + 2])
def test_a_failure_during_an_outage_costs_the_item_no_attempt(attempts: int) -> None:
    answer = _answer(Verdict.OUTAGE, "connection", "refused")

    outcome = POLICY.outcome(_item(attempts), answer, NOW, outage=True)

    assert outcome.status == "pending"
    assert outcome.attempts == attempts
    assert outcome.next_attempt_at is None
    assert outcome.call.result == "paused"


def test_a_permanent_answer_during_an_outage_still_fails() -> None:
    outcome = POLICY.outcome(_item(0), _answer(Verdict.PERMANENT, "4000003"), NOW, outage=True)

    assert outcome.status == "failed"


def test_our_own_errors_back_off_and_fail_in_the_end() -> None:
    retried = POLICY.after_error(_item(0), "KeyError('x')")
    given_up = POLICY.after_error(_item(MAX_ATTEMPTS - 1), "KeyError('x')")

    assert (retried.status, retried.attempts, retried.error_code) == ("pending", 1, "internal")
    assert retried.next_attempt_at is not None
    assert (given_up.status, given_up.error_code) == ("failed", "internal")


# --- RetryPolicy.next_attempt_at ------------------------------------------------------------


@pytest.mark.parametrize("attempts", range(40))
def test_next_attempt_at_stays_between_now_and_the_cap(attempts: int) -> None:
    for _ in range(20):
        at = POLICY.next_attempt_at(attempts, NOW)
        assert NOW <= at <= NOW + timedelta(seconds=BACKOFF_CAP_S)


@pytest.mark.parametrize(
    ("attempts", "ceiling_s"),
    [(0, 2.0), (1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0), (6, BACKOFF_CAP_S), (30, BACKOFF_CAP_S)],
)
def test_next_attempt_at_ceiling_doubles_up_to_the_cap(
    attempts: int, ceiling_s: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers.random, "uniform", lambda low, high: high)

    assert POLICY.next_attempt_at(attempts, NOW) == NOW + timedelta(seconds=ceiling_s)


def test_next_attempt_at_is_jittered() -> None:
    times = {POLICY.next_attempt_at(5, NOW) for _ in range(20)}

    assert len(times) > 1


def test_next_attempt_at_survives_a_huge_attempt_count() -> None:
    at = POLICY.next_attempt_at(2000, NOW)

    assert NOW <= at <= NOW + timedelta(seconds=BACKOFF_CAP_S)


# --- the rate ceiling -----------------------------------------------------------------------


async def test_the_governor_spaces_calls_from_the_first_with_no_burst() -> None:
    # 10/s: 11 calls need 10 full intervals if there is no start-up burst.
    governor = RateGovernor(10)
    started = time.monotonic()

    for _ in range(11):
        await governor.acquire()

    elapsed = time.monotonic() - started
    assert elapsed >= 0.85
    assert elapsed < 3.0


class _HeldClient:
    """Answers every call with success, but holds the first (or every one) until `release`."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0
        self.hold_every_call = False

    async def recognize(self, data: bytes, filename: str, content_type: str) -> Answer:
        self.calls += 1
        if self.calls == 1 or self.hold_every_call:
            await self.release.wait()
        return Answer("0", "ok", 0.01, 200, RECOGNITION)

    def redact(self, text: str) -> str:
        return text


def _pool(client: _HeldClient, claimed: asyncio.Queue, stop: asyncio.Event) -> WorkerPool:
    return WorkerPool(
        client,  # type: ignore[arg-type]
        RateGovernor(1000.0, stop),
        Breaker(),
        POLICY,
        claimed,
        asyncio.Queue(),
        stop,
        lambda reason, message: stop.set(),
    )


async def _first_call_out(
    tmp_path: Path, count: int
) -> tuple[WorkerPool, _HeldClient, asyncio.Event, asyncio.Task]:
    """A worker on `count` queued images (then the sentinel), its first call held open."""
    claimed: asyncio.Queue = asyncio.Queue()
    for item in [*_jpeg_items(tmp_path, count), None]:
        claimed.put_nowait(item)
    client, stop = _HeldClient(), asyncio.Event()
    pool = _pool(client, claimed, stop)
    worker = asyncio.create_task(pool.run())
    while client.calls < 1:
        await asyncio.sleep(0.001)
    return pool, client, stop, worker


def _jpeg_items(tmp_path: Path, count: int) -> list[ClaimedItem]:
    found = []
    for n in range(count):
        path = tmp_path / f"{n}.jpg"
        path.write_bytes(JPEG_MAGIC + bytes(100))
        found.append(ClaimedItem(n + 1, str(path), 103, 0.0, 0, captured_at=NOW))
    return found


async def test_a_worker_reads_the_next_file_while_its_call_is_out(tmp_path, monkeypatch) -> None:
    read: list[str] = []
    real_read = read_checked

    async def spy(path: str | bytes, *limit: int) -> Read:
        read.append(Path(os.fsdecode(path)).name)
        return await real_read(path, *limit)

    monkeypatch.setattr(workers, "read_checked", spy)
    pool, client, _stop, worker = await _first_call_out(tmp_path, 3)

    await asyncio.sleep(0.05)
    assert read == ["0.jpg", "1.jpg"]  # the second file is in hand before the first answer
    client.release.set()
    await asyncio.wait_for(worker, 5)  # the sentinel behind the last item ends it

    outcomes = [pool.results.get_nowait() for _ in range(pool.results.qsize())]
    assert [(o.item_id, o.status) for o in outcomes] == [(1, "done"), (2, "done"), (3, "done")]
    assert client.calls == 3


async def test_an_item_read_ahead_goes_back_unsent_when_the_run_stops(tmp_path) -> None:
    pool, client, stop, worker = await _first_call_out(tmp_path, 2)

    stop.set()  # the second item was already read ahead
    client.release.set()
    await asyncio.wait_for(worker, 5)

    outcomes = [pool.results.get_nowait() for _ in range(pool.results.qsize())]
    summary = [(o.item_id, o.status, o.attempts) for o in outcomes]
    assert summary == [(1, "done", 1), (2, "pending", 0)]
    assert client.calls == 1


async def test_no_worker_reads_ahead_an_item_an_idle_worker_could_start(tmp_path) -> None:
    claimed: asyncio.Queue = asyncio.Queue()
    client, stop = _HeldClient(), asyncio.Event()
    client.hold_every_call = True
    pool = _pool(client, claimed, stop)
    workers_ = [asyncio.create_task(pool.run()) for _ in range(2)]
    await asyncio.sleep(0)  # both wait for work
    for item in _jpeg_items(tmp_path, 2):
        claimed.put_nowait(item)

    for _ in range(500):
        if client.calls == 2:
            break
        await asyncio.sleep(0.002)
    assert client.calls == 2  # one each, at once: neither took the other's item ahead
    client.release.set()
    for _ in workers_:
        claimed.put_nowait(None)
    await asyncio.wait_for(asyncio.gather(*workers_), 5)


async def test_a_stop_sends_back_an_item_whose_read_is_stuck(tmp_path, monkeypatch) -> None:
    never = threading.Event()

    async def stuck(path: str | bytes, *limit: int) -> Read:
        return await in_daemon_thread(never.wait)  # a hung mount: this read never returns

    monkeypatch.setattr(workers, "read_checked", stuck)
    claimed: asyncio.Queue = asyncio.Queue()
    for item in [*_jpeg_items(tmp_path, 1), None]:
        claimed.put_nowait(item)
    client, stop = _HeldClient(), asyncio.Event()
    pool = _pool(client, claimed, stop)
    worker = asyncio.create_task(pool.run())
    await asyncio.sleep(0.05)

    stop.set()
    await asyncio.wait_for(worker, 5)

    outcome = pool.results.get_nowait()
    assert (outcome.item_id, outcome.status, outcome.attempts) == (1, "pending", 0)
    assert client.calls == 0
    never.set()


async def test_a_sent_item_carries_the_size_and_mtime_it_was_read_at(tmp_path) -> None:
    (item,) = _jpeg_items(tmp_path, 1)
    Path(item.path).write_bytes(JPEG_MAGIC + bytes(500))  # rewritten since the scan
    claimed: asyncio.Queue = asyncio.Queue()
    for queued in (item, None):
        claimed.put_nowait(queued)
    client, stop = _HeldClient(), asyncio.Event()
    client.release.set()
    pool = _pool(client, claimed, stop)

    await asyncio.wait_for(pool.run(), 5)

    outcome = pool.results.get_nowait()
    st = os.stat(item.path)
    assert (outcome.status, outcome.size, outcome.mtime) == ("done", st.st_size, st.st_mtime)
    assert item.size != st.st_size


# --- what the pool does with the run around its calls ---------------------------------------


class _ScriptedClient:
    """Answers each call with the next code of a script (the last one repeats)."""

    endpoint = "http://127.0.0.1:9"

    def __init__(self, *codes: str) -> None:
        self.codes = list(codes)
        self.calls = 0

    async def recognize(self, data: bytes, filename: str, content_type: str) -> Answer:
        code = self.codes[min(self.calls, len(self.codes) - 1)]
        self.calls += 1
        recognition = RECOGNITION if code == "0" else None
        return Answer(
            code, "scripted", 0.001, None, recognition, reached=code != "connection_refused"
        )

    def redact(self, text: str) -> str:
        return text


def _scripted_pool(
    tmp_path: Path, client: _ScriptedClient, count: int, *, max_outage_s: float = 900.0
) -> tuple[WorkerPool, list[tuple[str, str | None]]]:
    claimed: asyncio.Queue = asyncio.Queue()
    for item in [*_jpeg_items(tmp_path, count), None]:
        claimed.put_nowait(item)
    stop = asyncio.Event()
    stops: list[tuple[str, str | None]] = []

    def on_stop(reason: str, message: str | None) -> None:
        stops.append((reason, message))
        stop.set()

    pool = WorkerPool(
        client,  # type: ignore[arg-type]
        RateGovernor(1000.0, stop),
        Breaker(max_outage_s),
        POLICY,
        claimed,
        asyncio.Queue(),
        stop,
        on_stop,
    )
    return pool, stops


async def test_no_call_starts_while_results_cannot_be_written(tmp_path) -> None:
    client = _ScriptedClient("0")
    pool, _stops = _scripted_pool(tmp_path, client, 3)
    pool.writable.clear()  # the database is away

    worker = asyncio.create_task(pool.run())
    await asyncio.sleep(0.1)
    assert client.calls == 0
    pool.writable.set()  # it is back
    await asyncio.wait_for(worker, 5)

    assert client.calls == 3


async def test_a_stop_while_waiting_for_the_database_spends_nothing(tmp_path) -> None:
    client = _ScriptedClient("0")
    pool, _stops = _scripted_pool(tmp_path, client, 2)
    pool.writable.clear()

    worker = asyncio.create_task(pool.run())
    await asyncio.sleep(0.05)
    pool.stop.set()
    await asyncio.wait_for(worker, 5)

    outcomes = [pool.results.get_nowait() for _ in range(pool.results.qsize())]
    assert client.calls == 0
    assert {(o.status, o.attempts, o.call) for o in outcomes} == {("pending", 0, None)}


@pytest.mark.parametrize("code", ["4000006", "5000503", "http_429"])
async def test_a_throttle_that_never_lets_up_stops_the_run(tmp_path, code: str) -> None:
    client = _ScriptedClient(code)
    pool, stops = _scripted_pool(tmp_path, client, 1000, max_outage_s=0.3)
    pool.governor.on_answer = lambda answer, real=pool.governor.on_answer: (  # type: ignore
        real(answer),
        setattr(pool.governor, "current_per_s", 1000.0),  # keep the pace: the test is the clock
    )

    await asyncio.wait_for(pool.run(), 10)

    assert [reason for reason, _ in stops] == ["throttle"]
    assert code in (stops[0][1] or "")
    outcomes = [pool.results.get_nowait() for _ in range(pool.results.qsize())]
    assert all(o.status == "pending" and o.attempts == 0 for o in outcomes)


async def test_refused_connections_before_any_answer_are_fatal_after_a_grace(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(workers, "REFUSED_GRACE_S", 0.2)
    client = _ScriptedClient("connection_refused")
    pool, stops = _scripted_pool(tmp_path, client, 1000)
    pool.breaker.on_answer = lambda answer: None  # type: ignore[method-assign]

    await asyncio.wait_for(pool.run(), 10)

    assert [reason for reason, _ in stops] == ["fatal"]
    assert "http://127.0.0.1:9" in (stops[0][1] or "")
    assert pool.stats.calls == 0  # nothing reached the API: nothing was paid for


async def test_refused_connections_after_an_answer_are_an_outage_not_fatal(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(workers, "REFUSED_GRACE_S", 0.0)
    client = _ScriptedClient("0", "connection_refused")
    pool, stops = _scripted_pool(tmp_path, client, 50)
    pool.breaker.on_answer = lambda answer: None  # type: ignore[method-assign]

    await asyncio.wait_for(pool.run(), 10)

    assert stops == []
    assert pool.stats.calls == 1


async def test_under_auto_only_the_limit_holds_items_and_nobody_reads_ahead(
    tmp_path, monkeypatch
) -> None:
    read: list[str] = []
    real_read = read_checked

    async def spy(path: str | bytes, *limit: int) -> Read:
        read.append(Path(os.fsdecode(path)).name)
        return await real_read(path, *limit)

    monkeypatch.setattr(workers, "read_checked", spy)
    claimed: asyncio.Queue = asyncio.Queue()
    for item in _jpeg_items(tmp_path, 12):
        claimed.put_nowait(item)
    client, stop = _HeldClient(), asyncio.Event()
    client.hold_every_call = True
    pool = _pool(client, claimed, stop)
    pool.concurrency = ConcurrencyLimit(pool.governor, pinned=None, max_concurrency=256)
    tasks = [asyncio.create_task(pool.run()) for _ in range(10)]  # more workers than slots

    await asyncio.sleep(0.05)  # before the limit is first looked at again (REFRESH_S)
    assert client.calls == START_LIMIT and len(read) == START_LIMIT
    client.release.set()
    for _ in tasks:
        claimed.put_nowait(None)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert client.calls == 12 and pool.results.qsize() == 12


async def test_only_answers_count_for_the_latency_not_timeouts(tmp_path) -> None:
    client = _ScriptedClient("timeout", "0", "0")
    pool, _stops = _scripted_pool(tmp_path, client, 3)
    pool.concurrency = ConcurrencyLimit(pool.governor, pinned=None, max_concurrency=256)

    await asyncio.wait_for(pool.run(), 5)

    assert client.calls == 3
    assert pool.concurrency._latencies == deque([0.001, 0.001])
