"""How many calls one process keeps in flight: pinned by `--concurrency N`, or found by itself.

With `--concurrency auto` (the default) the limit follows Little's law: the calls in flight
that a rate needs are the rate times the time each call takes,

    limit = clamp(ceil(rate × latency × HEADROOM) + MARGIN, 1, --max-concurrency)

where `rate` is the pacing governor's current rate (`--rate`, this process's share of it, or
less after AIMD slowed it down on throttles) and `latency` a high percentile (LATENCY_QUANTILE)
of the recent calls' latency. A call still in flight counts as evidence too: its age so far is
a lower bound of its latency, so the limit grows while the first answers are still on their
way, and grows at once when the API slows down, without waiting for the slow answers. It
starts small (START_LIMIT: a fast API never sees a herd), grows promptly (to the target at the
next look, every REFRESH_S), and shrinks gently (SHRINK_PER_S of its value a second), so one
quick spell does not take away the slots a slow one will need.

Why Little's law and not a gradient limiter (Netflix's concurrency-limits, Vegas, AIMD on
latency): those discover a capacity nobody states, by probing until latency rises. Here the
capacity is stated, as the rate we are allowed, and exceeding it is already handled by the
pacing (`pacing.RateGovernor` slows down on throttles). What is unknown is only how many calls
the rate needs in flight, which is exactly what Little's law gives from the measured latency;
a gradient limiter would probe the API with more calls than the rate needs, and on a slow API
(latency that does not rise with load, as an OCR service's is per image) it would keep growing
for nothing.

The limit is a resizable gate on the worker pool (`slot()`): up to --max-concurrency worker
tasks, of which only `limit` hold an item (read, waiting for its turn, sent) at once; the claim
queue's size follows it (`on_resize`), so the items leased and the files in memory stay
proportional to what the rate needs. When it shrinks, the slots held beyond it end with their
item. A pinned limit keeps the pool exactly as it was: N workers, no gate, each reading the
next file ahead; its latency is still measured, for progress and `status`. Only answers count
for the latency: a timeout or a refused connection is an outage, the breaker's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Protocol

START_LIMIT = 4  # before anything is known: a few calls, never --max-concurrency at once
HEADROOM = 1.25  # over rate × latency: the calls' spread, reads and hand-offs in the slot
MARGIN = 1  # one more slot, so that a low rate × latency still has one call to spare
LATENCY_QUANTILE = 0.9  # of the recent latencies (and ages of the calls in flight)
LATENCY_WINDOW = 100  # answers kept for it
REFRESH_S = 0.1  # how often the limit is looked at again while calls are in flight
SHRINK_PER_S = 0.25  # at most this fraction of the limit given up a second


class Rate(Protocol):
    """What the limit reads of the pacing: the rate it keeps to now (`RateGovernor`)."""

    current_per_s: float


def target_limit(rate_per_s: float, latency_s: float, max_concurrency: int) -> int:
    """The calls in flight `rate_per_s` needs when each takes `latency_s` (Little's law),
    with HEADROOM and MARGIN, between 1 and `max_concurrency`."""
    needed = rate_per_s * max(latency_s, 0.0) * HEADROOM
    if not math.isfinite(needed) or needed >= max_concurrency:
        return max_concurrency
    return max(1, min(math.ceil(needed) + MARGIN, max_concurrency))


def quantile(values: list[float], q: float) -> float:
    """The `q` quantile of `values` (nearest rank; 0.0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(math.ceil(q * len(ordered)), len(ordered)) - 1]


class ConcurrencyLimit:
    """The calls in flight one process allows itself, and the latency it measures.

    `pinned`: a fixed number (`--concurrency N`), no gate. Else `adaptive`: the gate opens
    `limit` slots, looked at again every REFRESH_S while calls are in flight, for the rate
    `rate` keeps to now (None: no pacing, every slot up to `max_concurrency`).
    """

    def __init__(
        self,
        rate: Rate | None,
        *,
        pinned: int | None,
        max_concurrency: int,
        on_resize: Callable[[int], object] | None = None,
    ) -> None:
        self.rate = rate
        self.adaptive = pinned is None
        self.max_concurrency = max_concurrency if pinned is None else pinned
        self.limit = pinned or min(START_LIMIT, max_concurrency)
        self._level = float(self.limit)  # the limit before rounding, for a gentle shrink
        self._on_resize = on_resize
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._calls: dict[object, float] = {}  # calls in flight: their start (monotonic)
        self._held = 0  # slots taken
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._refresh: asyncio.TimerHandle | None = None
        self._refreshed_at = time.monotonic()
        if self.adaptive and on_resize is not None:
            on_resize(self.limit)  # the claim queue starts as small as the limit

    @property
    def workers(self) -> int:
        """How many worker tasks the pool needs: every slot the limit may open."""
        return self.max_concurrency

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    @property
    def latency_s(self) -> float | None:
        """The latency the limit works from (LATENCY_QUANTILE of the recent answers), or
        None before the first answer."""
        return quantile(list(self._latencies), LATENCY_QUANTILE) if self._latencies else None

    @property
    def latency_ms(self) -> float | None:
        latency = self.latency_s
        return None if latency is None else round(latency * 1000, 1)

    # The gate: a worker holds a slot while it holds an item.

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the `limit` slots (pinned: no wait, nothing held)."""
        if not self.adaptive:
            yield
            return
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    async def _acquire(self) -> None:
        if self._held < self.limit and not self._waiting:
            self._held += 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # given the slot, but cancelled before taking it
            raise

    def _release(self) -> None:
        self._held -= 1
        self._open()

    def _open(self) -> None:
        """Give free slots to the workers waiting, in arrival order."""
        while self._waiting and self._held < self.limit:
            turn = self._waiting.popleft()
            if not turn.done():
                self._held += 1
                turn.set_result(None)

    # Measuring: every call's start, and its latency once answered.

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """Around one request to the API: its age counts while it is in flight."""
        token = object()
        self._calls[token] = time.monotonic()
        self._schedule()
        try:
            yield
        finally:
            del self._calls[token]

    def answered(self, latency_s: float) -> None:
        """An answer from the API (not a call that never reached it) took `latency_s`."""
        self._latencies.append(latency_s)

    def _schedule(self) -> None:
        if self.adaptive and self._refresh is None:
            loop = asyncio.get_running_loop()
            self._refresh = loop.call_later(REFRESH_S, self._on_refresh)

    def _on_refresh(self) -> None:
        self._refresh = None
        self.refresh()
        if self._calls:
            self._schedule()

    def refresh(self, now: float | None = None) -> None:
        """Look at the limit again: up to the target at once, down gently (pinned: never)."""
        if not self.adaptive:
            return
        now = time.monotonic() if now is None else now
        elapsed_s, self._refreshed_at = max(now - self._refreshed_at, 0.0), now
        ages = [now - started for started in self._calls.values()]
        evidence = list(self._latencies) + ages
        if not evidence:
            return
        latency_s = quantile(evidence, LATENCY_QUANTILE)
        rate_per_s = math.inf if self.rate is None else self.rate.current_per_s
        target = target_limit(rate_per_s, latency_s, self.max_concurrency)
        if target >= self._level:
            self._level = float(target)
        else:
            self._level = max(float(target), self._level * (1 - SHRINK_PER_S * elapsed_s))
        limit = max(1, min(math.ceil(self._level), self.max_concurrency))
        if limit != self.limit:
            self.limit = limit
            self._open()
            if self._on_resize is not None:
                self._on_resize(limit)
