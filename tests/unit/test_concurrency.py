"""The concurrency limit's arithmetic (Little's law, headroom, bounds), how it grows and
shrinks, and its gate; the claim queue that follows it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from pipeline.claimer import ClaimQueue
from pipeline.concurrency import (
    HEADROOM,
    MARGIN,
    START_LIMIT,
    ConcurrencyLimit,
    quantile,
    target_limit,
)


@dataclass
class Rate:
    current_per_s: float


def test_target_is_rate_times_latency_with_headroom_and_margin():
    assert target_limit(40, 1.0, 256) == 50 + MARGIN  # 40/s × 1 s × 1.25
    assert target_limit(40, 0.8, 256) == 40 + MARGIN
    assert target_limit(40, 0.05, 256) == 3 + MARGIN  # ceil(2.5)
    assert HEADROOM == 1.25


def test_target_stays_between_one_and_the_maximum():
    assert target_limit(40, 0.0, 256) == 1
    assert target_limit(0.2, 0.01, 256) == 1 + MARGIN
    assert target_limit(40, 30.0, 256) == 256
    assert target_limit(40, 1.0, 5) == 5
    assert target_limit(float("inf"), 0.05, 64) == 64
    assert target_limit(1.0, 1.0, 1) == 1


def test_quantile_is_the_nearest_rank():
    assert quantile([], 0.9) == 0.0
    assert quantile([0.5], 0.9) == 0.5
    assert quantile([float(n) for n in range(1, 101)], 0.9) == 90.0
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0


def limit_at(rate: float, *, max_concurrency: int = 256) -> tuple[ConcurrencyLimit, list[int]]:
    resized: list[int] = []
    limit = ConcurrencyLimit(
        Rate(rate), pinned=None, max_concurrency=max_concurrency, on_resize=resized.append
    )
    return limit, resized


def test_auto_starts_small_and_sizes_the_claim_queue_to_it():
    limit, resized = limit_at(40)
    assert limit.adaptive and limit.limit == START_LIMIT and resized == [START_LIMIT]
    assert limit.workers == 256  # tasks enough for every slot it may open
    assert limit.latency_ms is None


def test_it_grows_to_the_target_at_once_from_the_answers():
    limit, resized = limit_at(40)
    for latency_s in (0.4, 0.8, 1.2, 1.0, 0.6, 0.9, 1.1, 0.5, 0.7, 1.0):
        limit.answered(latency_s)
    limit.refresh()
    assert limit.limit == target_limit(40, 1.1, 256) == 56  # the p90 of ten answers: 1.1 s
    assert resized[-1] == 56
    assert limit.latency_ms == 1100.0


def test_calls_still_in_flight_count_before_any_answer():
    limit, _ = limit_at(40)

    async def slow_calls() -> None:
        with limit.call(), limit.call():
            limit.refresh(time.monotonic() + 2.0)  # both have waited 2 s already

    asyncio.run(slow_calls())
    assert target_limit(40, 2.0, 256) == 101 <= limit.limit <= target_limit(40, 2.02, 256)
    assert limit.latency_s is None  # nothing answered yet: nothing shown


def test_it_shrinks_gently_and_follows_a_slower_rate():
    limit, _ = limit_at(40)
    for _ in range(10):
        limit.answered(1.0)
    limit.refresh()
    assert limit.limit == 51
    limit.rate.current_per_s = 10  # type: ignore[misc]  # AIMD halved it twice
    start = time.monotonic()
    limit.refresh(start + 1.0)  # one second later: a quarter given up at most
    assert limit.limit == 39
    limit.refresh(start + 60.0)
    assert limit.limit == target_limit(10, 1.0, 256) == 14


def test_the_maximum_caps_it():
    limit, _ = limit_at(1000, max_concurrency=5)
    limit.answered(2.0)
    limit.refresh()
    assert limit.limit == 5


def test_a_pinned_limit_never_moves_nor_gates():
    resized: list[int] = []
    limit = ConcurrencyLimit(Rate(40), pinned=3, max_concurrency=256, on_resize=resized.append)
    limit.answered(0.001)  # auto would go down to 2
    limit.refresh(time.monotonic() + 60.0)
    assert (limit.adaptive, limit.limit, limit.workers, resized) == (False, 3, 3, [])
    assert limit.latency_ms == 1.0

    async def many_slots() -> None:
        async with limit.slot(), limit.slot(), limit.slot(), limit.slot():
            pass  # four at once: a pinned pool has no gate

    asyncio.run(many_slots())


async def test_the_gate_lets_limit_slots_through_and_opens_as_it_grows():
    limit, _ = limit_at(40)
    inside = 0
    peak = 0
    release = asyncio.Event()

    async def worker() -> None:
        nonlocal inside, peak
        async with limit.slot():
            inside += 1
            peak = max(peak, inside)
            await release.wait()
            inside -= 1

    tasks = [asyncio.create_task(worker()) for _ in range(10)]
    await asyncio.sleep(0.01)
    assert inside == START_LIMIT
    for _ in range(10):
        limit.answered(0.1)
    limit.refresh()  # target: ceil(40 × 0.1 × 1.25) + 1 = 6
    await asyncio.sleep(0.01)
    assert inside == 6
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 6 and inside == 0


async def test_a_shrunk_gate_holds_newcomers_until_holders_leave():
    limit, _ = limit_at(40)
    for _ in range(10):
        limit.answered(0.1)
    limit.refresh()
    assert limit.limit == 6
    entered = asyncio.Event()
    leave = asyncio.Event()

    async def holder() -> None:
        async with limit.slot():
            entered.set()
            await leave.wait()

    holders = [asyncio.create_task(holder()) for _ in range(6)]
    await asyncio.sleep(0.01)
    limit.rate.current_per_s = 1  # type: ignore[misc]
    limit.refresh(time.monotonic() + 60.0)
    assert limit.limit == 2  # six held, two allowed
    newcomer = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    assert not newcomer.done()
    leave.set()
    await asyncio.gather(*holders, newcomer)


async def test_a_cancelled_waiter_gives_its_slot_back():
    limit, _ = limit_at(40, max_concurrency=1)
    assert limit.limit == 1
    async with limit.slot():
        waiter = asyncio.create_task(limit.slot().__aenter__())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    async with limit.slot():  # the slot is free again
        pass


def test_the_claim_queue_follows_the_limit_within_its_bounds():
    queue = ClaimQueue(workers=256)  # every worker's end fits at close
    assert queue.maxsize == 512 and queue.size == 512
    queue.resize(4)
    assert queue.size == 8 and queue.free == 8  # never below MIN_QUEUE
    for _ in range(5):
        queue.put_nowait(None)
    assert not queue.room.is_set() and queue.free == 3
    queue.resize(50)
    assert queue.size == 100 and queue.room.is_set() and queue.free == 95
    queue.resize(1000)
    assert queue.size == 512
    queue.resize(1)
    assert queue.size == 8 and not queue.room.is_set()
