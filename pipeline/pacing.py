"""When the pool may send: the rate ceiling, slowing down when the API says so, and outages.

- `RateGovernor`: never faster than `--rate`, and as close to it as a sliding-second limit
  allows: every call gets a slot on an even, absolute schedule, 2 % wider than the rate (20 ms
  of every second left for send and network jitter), so the event loop's timer lateness is
  made up by the next calls instead of being lost on every one (a leaky bucket of one request,
  aiolimiter's, lost 2.8 % of 40/s that way, more at higher rates); no start-up burst. When
  the API refuses for its call limit (a throttle verdict: 4000006, 5000503, HTTP 429) the
  whole pool slows down: the rate halves (at most once a second, since one overshoot draws
  many refusals at once), then recovers additively; a Retry-After pauses every worker at least
  that long. A throttle with no call let through for longer than `--max-outage` (a spent
  quota) ends the run like an outage.
- `Breaker`: when every call fails the way an outage does (refused connections, timeouts,
  gateway 5xx), the pool stops sending and probes with one call at a time instead of burning
  every item's attempts; when the outage lasts longer than `max_outage_s`, the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from pipeline.config import DEFAULT_MAX_OUTAGE_S
from pipeline.records import Answer
from pipeline.verdicts import Verdict

log = logging.getLogger(__name__)

DECREASE_COOLDOWN_S = 1.0  # the API's limit is per second: one halving per overshoot
RECOVER_FRACTION_PER_S = 0.05  # additive increase: 5 % of the ceiling per quiet second
MIN_RATE_PER_S = 0.2
PACE_MARGIN = 0.02  # slots 2 % wider than the rate: 20 ms a second for jitter
MAX_LAG_S = 0.005  # lateness up to this is made up by the next calls; a longer stall is not
MAX_RETRY_AFTER_S = 300.0  # a gateway asking for an hour gets five minutes, then a probe

OUTAGE_AFTER_FAILURES = 8  # consecutive outage-like answers across the pool
PROBE_EVERY_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # growing pause between probes while open


def is_throttle(answer: Answer) -> bool:
    return answer.verdict is Verdict.THROTTLE


def is_outage(answer: Answer) -> bool:
    return answer.verdict is Verdict.OUTAGE


class RateGovernor:
    """Paces one process's calls. `ceiling_per_s` is `--rate`, the job's budget; with several
    workers on the job each keeps to its `share_per_s` of it, and AIMD works below that."""

    def __init__(self, ceiling_per_s: float, stop: asyncio.Event | None = None) -> None:
        self._stop = stop or asyncio.Event()  # every wait here ends early when it is set
        self.ceiling_per_s = ceiling_per_s
        self.share_per_s = ceiling_per_s
        self.current_per_s = ceiling_per_s
        self._next_slot = 0.0
        self._waiting: deque[asyncio.Future[None]] = deque()  # workers waiting for a slot
        self._ticker: asyncio.TimerHandle | None = None
        self._paused_until = 0.0
        self._last_decrease = -DECREASE_COOLDOWN_S
        self._last_recover = 0.0
        self.throttled = 0  # how many times the pool was slowed down
        self._throttled_since: float | None = None  # the first refusal since the last success

    async def acquire(self) -> None:
        """Wait for this worker's turn to send one request (or for the run to stop)."""
        self._recover()
        now = time.monotonic()
        if not self._waiting and self._take_slot(now):
            return  # the common case when the pool is not at its rate: no wait, no future
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        self._tick()
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({turn, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            turn.cancel()  # stopped (or cancelled) first: the turn goes to the next in line

    def _slot(self, now: float) -> float:
        """When the next turn is due. Slots follow each other by exactly one interval, so a
        turn given late leaves the next slot where it was; but the schedule never lags more
        than MAX_LAG_S behind the clock, so a stall (or a quiet spell) is not made up in a
        burst. A pause (Retry-After, a newcomer's wait) holds every turn, queued ones too."""
        return max(self._next_slot, now - MAX_LAG_S, self._paused_until)

    def _take_slot(self, now: float) -> bool:
        """Take the next turn if it is due."""
        slot = self._slot(now)
        if slot > now:
            return False
        self._next_slot = slot + 1.0 / (self.current_per_s * (1.0 - PACE_MARGIN))
        return True

    def _tick(self) -> None:
        """Give due slots to the workers waiting, in arrival order; then wait for the next."""
        if self._ticker is not None:
            return
        now = time.monotonic()
        while self._waiting:
            if self._waiting[0].done():  # its worker stopped waiting
                self._waiting.popleft()
            elif self._take_slot(now):
                self._waiting.popleft().set_result(None)
            else:
                delay = self._slot(now) - now
                self._ticker = asyncio.get_running_loop().call_later(delay, self._on_tick)
                return

    def _on_tick(self) -> None:
        self._ticker = None
        self._tick()

    def set_share(self, share_per_s: float) -> None:
        """This process's part of the job's rate, as the number of live workers changes."""
        self.share_per_s = min(share_per_s, self.ceiling_per_s)
        self.current_per_s = min(self.current_per_s, self.share_per_s)

    def hold(self, seconds: float) -> None:
        """Send nothing for a while (a worker joining waits until its peers have made room)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def throttled_for_s(self) -> float:
        """How long every answer has been a throttle (0 when the last one was not)."""
        if self._throttled_since is None:
            return 0.0
        return time.monotonic() - self._throttled_since

    def on_answer(self, answer: Answer) -> None:
        now = time.monotonic()
        if not is_throttle(answer):
            if answer.reached:
                self._throttled_since = None
            return
        if self._throttled_since is None:
            self._throttled_since = now
        if answer.retry_after_s:
            pause_s = min(answer.retry_after_s, MAX_RETRY_AFTER_S)
            self._paused_until = max(self._paused_until, now + pause_s)
        if now - self._last_decrease < DECREASE_COOLDOWN_S:
            return
        self._recover()
        self.current_per_s = max(self.current_per_s / 2, min(MIN_RATE_PER_S, self.share_per_s))
        self._last_decrease = now
        self.throttled += 1
        log.warning(
            "the API's call limit was hit (%s): slowing to %.1f requests/s",
            answer.code,
            self.current_per_s,
        )

    def _recover(self) -> None:
        """Additive increase: from a second after the last halving, 5 % of the share a second."""
        if self.current_per_s >= self.share_per_s:
            return
        now = time.monotonic()
        quiet_s = now - max(self._last_decrease + DECREASE_COOLDOWN_S, self._last_recover)
        if quiet_s > 0:
            step = self.share_per_s * RECOVER_FRACTION_PER_S * quiet_s
            self.current_per_s = min(self.share_per_s, self.current_per_s + step)
            self._last_recover = now


class OutageTooLong(Exception):
    """The API has been unreachable for longer than the run may wait."""


class Breaker:
    """Opens after a run of outage-like answers; then one probe call at a time, spaced out."""

    def __init__(self, max_outage_s: float = DEFAULT_MAX_OUTAGE_S) -> None:
        self.max_outage_s = max_outage_s
        self.outages = 0  # how many times it opened
        self._failures = 0
        self._opened_at: float | None = None
        self._probes = 0
        self._probing = False
        self._aborted = asyncio.Event()
        self._closed = asyncio.Event()
        self._closed.set()

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    async def turn(self) -> bool:
        """Wait until a call may go out; True when it is the outage's probe (then `end_probe`).

        Raises OutageTooLong once the outage has lasted longer than `max_outage_s`.
        """
        while self._opened_at is not None and not self._aborted.is_set():
            if self._probing:
                self._closed.clear()
                await self._closed.wait()
                continue
            outage_s = time.monotonic() - self._opened_at
            if outage_s > self.max_outage_s:
                raise OutageTooLong(f"the API has been unreachable for {outage_s:.0f}s")
            self._probing = True
            pause = PROBE_EVERY_S[min(self._probes, len(PROBE_EVERY_S) - 1)]
            self._probes += 1
            with contextlib.suppress(TimeoutError):  # a stop cuts the pause short
                await asyncio.wait_for(
                    self._aborted.wait(), min(pause, self.max_outage_s - outage_s + 0.01)
                )
            if self._opened_at is None or self._aborted.is_set():
                self.end_probe()
                return False
            return True
        return False

    def end_probe(self) -> None:
        self._probing = False
        self._closed.set()  # wake the waiters: one of them probes next, unless it closed

    def abort(self) -> None:
        """The run is stopping: let every waiter through (to put its item back)."""
        self._aborted.set()
        self._closed.set()

    def on_answer(self, answer: Answer) -> None:
        if is_outage(answer):
            self._failures += 1
            if self._opened_at is None and self._failures >= OUTAGE_AFTER_FAILURES:
                self._opened_at = time.monotonic()
                self.outages += 1
                log.warning("the API looks down (%s): pausing, probing with one call", answer.code)
            return
        if self._opened_at is not None:
            log.warning("the API answers again: resuming")
        self._failures = 0
        self._opened_at = None
        self._probes = 0
        self._closed.set()
