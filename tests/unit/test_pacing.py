"""The pool's pacing: the rate ceiling, AIMD on the API's call limit, and the outage breaker."""

from __future__ import annotations

import asyncio
import bisect
import time

import pytest

from pipeline import pacing
from pipeline.pacing import (
    OUTAGE_AFTER_FAILURES,
    Breaker,
    OutageTooLong,
    RateGovernor,
    is_outage,
    is_throttle,
)
from pipeline.records import Answer
from pipeline.verdicts import Verdict


def answer(verdict: Verdict, code: str, retry_after_s: float | None = None) -> Answer:
    made = Answer(code, "", 0.01, 200, retry_after_s=retry_after_s)
    assert made.verdict is verdict, (code, made.verdict)
    return made


LIMIT = answer(Verdict.THROTTLE, "4000006")
OK = answer(Verdict.DONE, "0")
REFUSED = answer(Verdict.OUTAGE, "connection")


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(pacing.time, "monotonic", fake)
    return fake


@pytest.mark.parametrize(
    ("a", "throttle", "outage"),
    [
        (LIMIT, True, False),
        (answer(Verdict.THROTTLE, "http_429"), True, False),
        (REFUSED, False, True),
        (answer(Verdict.OUTAGE, "timeout"), False, True),
        (answer(Verdict.OUTAGE, "http_502"), False, True),
        (answer(Verdict.RETRY, "5000001"), False, False),  # the API answered: it is up
        (answer(Verdict.PERMANENT, "4000002"), False, False),
        (OK, False, False),
    ],
)
def test_what_counts_as_throttling_and_as_an_outage(a: Answer, throttle: bool, outage: bool):
    assert (is_throttle(a), is_outage(a)) == (throttle, outage)


def test_a_call_limit_halves_the_rate_once_per_second(clock: Clock) -> None:
    governor = RateGovernor(40)

    for _ in range(10):  # one overshoot draws many refusals at once
        governor.on_answer(LIMIT)

    assert governor.current_per_s == 20
    clock.now += 1.1
    governor.on_answer(LIMIT)
    assert governor.current_per_s == pytest.approx(10, abs=0.3)
    assert governor.throttled == 2


def test_the_rate_recovers_additively_up_to_the_ceiling(clock: Clock) -> None:
    governor = RateGovernor(40)
    governor.on_answer(LIMIT)
    assert governor.current_per_s == 20

    clock.now += 1.0  # the cooldown: no recovery yet
    governor._recover()
    assert governor.current_per_s == 20
    clock.now += 2.0  # two quiet seconds: +5 % of 40 each
    governor._recover()
    assert governor.current_per_s == pytest.approx(24)
    clock.now += 60
    governor._recover()
    assert governor.current_per_s == 40


def test_answers_other_than_the_limit_leave_the_rate_alone(clock: Clock) -> None:
    governor = RateGovernor(40)

    for a in (OK, REFUSED, answer(Verdict.RETRY, "5000001")):
        governor.on_answer(a)

    assert governor.current_per_s == 40


def test_the_rate_never_drops_below_the_floor(clock: Clock) -> None:
    governor = RateGovernor(1)

    for _ in range(20):
        clock.now += 2
        governor.on_answer(LIMIT)

    assert governor.current_per_s == pacing.MIN_RATE_PER_S


async def test_a_throttled_pool_is_spaced_at_the_lower_rate() -> None:
    governor = RateGovernor(100)
    governor.on_answer(LIMIT)  # 50/s
    governor.on_answer(LIMIT)  # within the cooldown: still 50/s
    started = time.monotonic()

    await asyncio.gather(*(governor.acquire() for _ in range(11)))

    assert 0.18 <= time.monotonic() - started < 1.0  # 10 intervals of 20 ms, not of 10 ms


async def test_retry_after_pauses_every_worker() -> None:
    governor = RateGovernor(1000)
    governor.on_answer(answer(Verdict.THROTTLE, "http_429", retry_after_s=0.3))
    started = time.monotonic()

    await governor.acquire()

    assert time.monotonic() - started >= 0.29


async def test_the_breaker_stays_closed_through_scattered_failures() -> None:
    breaker = Breaker()
    for _ in range(OUTAGE_AFTER_FAILURES - 1):
        breaker.on_answer(REFUSED)
    breaker.on_answer(OK)
    for _ in range(OUTAGE_AFTER_FAILURES - 1):
        breaker.on_answer(REFUSED)

    assert not breaker.is_open
    assert await breaker.turn() is False


async def test_an_open_breaker_lets_one_probe_out_and_holds_the_rest(monkeypatch) -> None:
    monkeypatch.setattr(pacing, "PROBE_EVERY_S", (0.05,))
    breaker = Breaker()
    for _ in range(OUTAGE_AFTER_FAILURES):
        breaker.on_answer(REFUSED)
    assert breaker.is_open and breaker.outages == 1

    turns = [asyncio.create_task(breaker.turn()) for _ in range(5)]
    await asyncio.sleep(0.2)
    finished = [t for t in turns if t.done()]
    assert [t.result() for t in finished] == [True]  # one probe, the others wait

    breaker.on_answer(OK)  # the probe got through: the service is back
    breaker.end_probe()
    results = await asyncio.gather(*turns)
    assert sorted(results) == [False, False, False, False, True]
    assert not breaker.is_open


async def test_a_failed_probe_hands_over_to_the_next_one(monkeypatch) -> None:
    monkeypatch.setattr(pacing, "PROBE_EVERY_S", (0.02,))
    breaker = Breaker()
    for _ in range(OUTAGE_AFTER_FAILURES):
        breaker.on_answer(REFUSED)

    first = await breaker.turn()
    second = asyncio.create_task(breaker.turn())
    await asyncio.sleep(0.05)
    assert not second.done()
    breaker.on_answer(REFUSED)
    breaker.end_probe()

    assert first is True
    assert await asyncio.wait_for(second, 1) is True


async def test_an_outage_past_the_limit_ends_the_wait(monkeypatch) -> None:
    monkeypatch.setattr(pacing, "PROBE_EVERY_S", (0.05,))
    breaker = Breaker(max_outage_s=0.1)
    for _ in range(OUTAGE_AFTER_FAILURES):
        breaker.on_answer(REFUSED)

    assert await breaker.turn() is True  # a last probe, within the limit
    breaker.on_answer(REFUSED)
    breaker.end_probe()
    await asyncio.sleep(0.1)
    with pytest.raises(OutageTooLong):
        await breaker.turn()


async def test_abort_lets_every_waiter_through(monkeypatch) -> None:
    monkeypatch.setattr(pacing, "PROBE_EVERY_S", (10.0,))
    breaker = Breaker()
    for _ in range(OUTAGE_AFTER_FAILURES):
        breaker.on_answer(REFUSED)
    turns = [asyncio.create_task(breaker.turn()) for _ in range(3)]
    await asyncio.sleep(0.05)

    breaker.abort()

    assert await asyncio.wait_for(asyncio.gather(*turns), 1) == [False, False, False]


async def test_the_pool_keeps_the_rate_and_no_second_holds_more(monkeypatch) -> None:
    """32 workers at 400/s for a second and a half, the event loop's timers waking late as
    they do: the calls keep to the rate (a leaky bucket of one request loses the lateness on
    every call), and no sliding second holds more than 400."""
    rate, workers, per_worker = 400, 32, 19
    governor = RateGovernor(rate)
    sent: list[float] = []

    async def worker() -> None:
        for _ in range(per_worker):
            await governor.acquire()
            sent.append(time.monotonic())

    await asyncio.gather(*(worker() for _ in range(workers)))

    sent.sort()
    sustained = (len(sent) - 1) / (sent[-1] - sent[0])
    assert sustained >= 0.9 * rate
    assert max(bisect.bisect_left(sent, t + 1.0) - i for i, t in enumerate(sent)) <= rate


async def test_a_stall_is_not_made_up_in_a_burst() -> None:
    rate = 200  # a slot every 5.1 ms
    governor = RateGovernor(rate)
    await governor.acquire()
    sent: list[float] = []

    async def worker() -> None:
        await governor.acquire()
        sent.append(time.monotonic())

    waiting = [asyncio.ensure_future(worker()) for _ in range(20)]
    await asyncio.sleep(0)  # every worker is in line
    time.sleep(0.1)  # the event loop stalls for 20 slots' time
    stalled_until = time.monotonic()
    await asyncio.gather(*waiting)

    # After the stall, only what MAX_LAG_S allows goes at once, then the rate resumes. (A
    # worker may have found its turn due before the stall began: it is not counted.)
    after = [t - stalled_until for t in sent if t >= stalled_until]
    at_once = sum(1 for t in after if t < 0.5 / rate)
    assert at_once <= 1 + pacing.MAX_LAG_S * rate
    assert max(after) >= (len(after) - at_once) / rate * 0.9


async def test_retry_after_holds_the_workers_already_in_line() -> None:
    governor = RateGovernor(20)  # a turn every 50 ms
    await governor.acquire()
    started = time.monotonic()
    sent: list[float] = []

    async def worker() -> None:
        await governor.acquire()
        sent.append(time.monotonic() - started)

    waiting = [asyncio.ensure_future(worker()) for _ in range(3)]
    await asyncio.sleep(0)  # all three are in line for their turns
    governor.on_answer(answer(Verdict.THROTTLE, "http_429", retry_after_s=0.4))
    await asyncio.gather(*waiting)

    assert min(sent) >= 0.39
