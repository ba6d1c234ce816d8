"""The worker pool: check each file locally, spend one rate-limited call on it, classify.

Worker tasks take claimed items from a bounded queue, each while holding a slot of the
concurrency limit (`concurrency.py`), share one limiter (the request rate), and hand every
item's `Outcome` to the writer: exactly one outcome per claimed item, whatever happens, so
the claimer's count of outstanding items always comes back to zero.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pipeline.budget import DailyBudget, Hold, with_hold
from pipeline.capture import exif_taken_at, from_mtime
from pipeline.client import NhnClient
from pipeline.concurrency import ConcurrencyLimit
from pipeline.dedupe import Dedupe
from pipeline.errors import DatabaseError
from pipeline.fitting import Fitter, Upload, with_fit
from pipeline.lease import Lease
from pipeline.pacing import Breaker, OutageTooLong, RateGovernor
from pipeline.preflight import Read, Refused, read_checked
from pipeline.records import (
    Answer,
    Call,
    CallResult,
    Checked,
    ClaimedItem,
    ItemStatus,
    Outcome,
    utcnow,
)
from pipeline.verdicts import Verdict, is_refusal, result_key

log = logging.getLogger(__name__)

UNKNOWN_CODE_MAX_ATTEMPTS = 3
# Refused connections before anything answered in this run: a wrong port or a service that is
# not there, given this long to come up (a restart) before the run stops as fatal.
REFUSED_GRACE_S = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_base_s: float
    backoff_cap_s: float

    def next_attempt_at(self, attempts: int, now: datetime) -> datetime:
        """Exponential backoff with full jitter, so a failing crowd does not retry in step."""
        # The exponent is capped first: 2**1024 does not fit in a float.
        doublings = min(max(attempts - 1, 0), 60)
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2**doublings)
        return now + timedelta(seconds=random.uniform(0, ceiling))

    def outcome(
        self, item: ClaimedItem, answer: Answer, started_at: datetime, *, outage: bool = False
    ) -> Outcome:
        """What `answer` makes of `item`: done, failed, or pending again for a later retry.

        During an outage (`outage`) a failed call does not count against the item's attempts:
        the service is down, not the image.
        """
        verdict = answer.verdict
        attempts = item.attempts + 1
        error = (answer.code, answer.message)
        if verdict.recognized:
            call = Call(started_at, answer, CallResult.DONE)
            return Outcome(item.id, ItemStatus.DONE, attempts, call=call)
        if verdict is Verdict.FATAL:
            # The run stops; the item is untouched and stays pending for the next run.
            call = Call(started_at, answer, CallResult.FATAL)
            return Outcome(item.id, ItemStatus.PENDING, item.attempts, call=call)
        if verdict is Verdict.THROTTLE:
            # Refused for the API's call limit: the pool slows down; the image did no wrong.
            call = Call(started_at, answer, CallResult.THROTTLED)
            later = self.next_attempt_at(1, utcnow())
            return Outcome(item.id, ItemStatus.PENDING, item.attempts, *error, later, call=call)
        if outage and verdict.retried:
            call = Call(started_at, answer, CallResult.PAUSED)
            return Outcome(item.id, ItemStatus.PENDING, item.attempts, *error, call=call)
        limit = self.max_attempts
        if verdict is Verdict.UNKNOWN:
            limit = min(limit, UNKNOWN_CODE_MAX_ATTEMPTS)
        if verdict is Verdict.PERMANENT or attempts >= limit:
            call = Call(started_at, answer, CallResult.FAILED)
            return Outcome(item.id, ItemStatus.FAILED, attempts, *error, call=call)
        return Outcome(
            item.id,
            ItemStatus.PENDING,
            attempts,
            *error,
            next_attempt_at=self.next_attempt_at(attempts, utcnow()),
            call=Call(started_at, answer, CallResult.RETRY),
        )

    def after_error(self, item: ClaimedItem, message: str) -> Outcome:
        """A bug of ours on this item: retried later like a transient error, failed in the end."""
        attempts = item.attempts + 1
        if attempts >= self.max_attempts:
            return Outcome(item.id, ItemStatus.FAILED, attempts, "internal", message)
        later = self.next_attempt_at(attempts, utcnow())
        return Outcome(
            item.id, ItemStatus.PENDING, attempts, "internal", message, next_attempt_at=later
        )


@dataclass
class PoolStats:
    calls: int = 0  # paid for: the request cap, progress and the summary
    retries: int = 0  # answers that left their item pending for another attempt
    copies: int = 0  # done from another item's recognition of the same content: no call
    unchanged: int = 0  # done again from the item's own recognition (touched): no call


def _fatal_line(answer: Answer) -> str:
    """Why no call can succeed, in one line: NHN's code and its key, or what the client saw
    (a certificate, a host, a redirect, an HTTP status), which it already says in full."""
    key = result_key(answer.code)
    if key is None:
        return answer.message
    return f"the API refused the run: {answer.code} {key}: {answer.message}"


def _dated(item: ClaimedItem, checked: Checked, outcome: Outcome) -> Outcome:
    """A done item the path did not date: dated by its EXIF, else its mtime."""
    if outcome.status is not ItemStatus.DONE or item.captured_at is not None:
        return outcome
    taken_at = exif_taken_at(checked.data) or from_mtime(checked.mtime)
    return dataclasses.replace(outcome, captured_at=taken_at)


def _pinned() -> ConcurrencyLimit:
    return ConcurrencyLimit(None, pinned=1, max_concurrency=1)


def _set_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass
class WorkerPool:
    client: NhnClient
    governor: RateGovernor
    breaker: Breaker
    policy: RetryPolicy
    claimed: asyncio.Queue[ClaimedItem | None]
    results: asyncio.Queue[Outcome | None]  # the writer's; None is its closing sentinel
    stop: asyncio.Event
    on_stop: Callable[[str, str | None], None]  # (reason, one-line message) ends the run
    max_requests: int | None = None  # the run's cost cap, in calls
    # Set while results can be written; the writer clears it while the database is away.
    writable: asyncio.Event = field(default_factory=_set_event)
    lease: Lease | None = None  # no call for an item whose lease may have gone to another worker
    fitter: Fitter = field(default_factory=lambda: Fitter(enabled=False))  # pictures over 5 MB
    budget: DailyBudget | None = None  # --daily-budget: each call held in the database first
    dedupe: Dedupe | None = None  # content recognized already is copied, not paid (--dedupe)
    # Calls in flight: by default pinned to the workers, none waiting at a gate.
    concurrency: ConcurrencyLimit = field(default_factory=_pinned)
    stats: PoolStats = field(default_factory=PoolStats)
    _idle: int = 0  # workers waiting for an item
    _answered: bool = False  # something reached the API in this run
    _refused_since: float | None = None  # refused connections since, while nothing answered

    async def run(self) -> None:
        """Process claimed items until the `None` sentinel arrives, each while holding a slot
        of the concurrency limit (with `--concurrency auto`, fewer than the workers)."""
        while True:
            async with self.concurrency.slot():
                if not await self._serve():
                    return

    async def _serve(self) -> bool:
        """Process the next item, and those read ahead behind it; False at the end.

        While one item is being processed, the file of the next item waiting in the queue is
        already being read, so the thread pool's hand-off hides behind the API's answer; one
        file ahead a worker, at most two files a worker in memory. A worker reads ahead only
        an item that no idle worker would take, so it never delays one another could start.
        Under `--concurrency auto` nobody reads ahead: the slots beyond the calls out (the
        limit's headroom) hold files already read, waiting for their turn, one file a slot.
        """
        item, reading = await self._next()
        while item is not None:
            ahead: tuple[ClaimedItem | None, asyncio.Future[Read] | None] | None = None
            # Items beyond those the idle workers will take (a woken worker still counts as
            # idle until it has its item).
            if (
                self.claimed.qsize() > self._idle
                and not self.stop.is_set()
                and not self.concurrency.adaptive
            ):
                waiting = self.claimed.get_nowait()
                ahead = (waiting, self._start_reading(waiting))
            try:
                outcome = await self._process(item, reading)
            except OutageTooLong as exc:
                self.on_stop("outage", f"{exc}; items stay pending, run again later")
                outcome = Outcome(item.id, ItemStatus.PENDING, item.attempts)
            except Exception as exc:  # a bug must not lose the item
                log.exception("unexpected error on item %s", item.id)
                outcome = self.policy.after_error(item, self.client.redact(repr(exc))[:500])
            finally:
                if reading is not None:
                    reading.cancel()  # a no-op once read; else its bytes are not wanted
            await self.results.put(outcome)
            if self.dedupe is not None:
                self.dedupe.settle(outcome)  # after the put: a copy is written after its payer
            if ahead is None:
                return True
            item, reading = ahead
        return False

    async def _next(self) -> tuple[ClaimedItem | None, asyncio.Future[Read] | None]:
        """Wait for the next item (None: the end), counted idle meanwhile; start its read."""
        self._idle += 1
        try:
            item = await self.claimed.get()
        finally:
            self._idle -= 1
        return item, self._start_reading(item)

    def _start_reading(self, item: ClaimedItem | None) -> asyncio.Future[Read] | None:
        """Start reading `item`'s file, unless there is none or the run is stopping."""
        if item is None or self.stop.is_set():
            return None
        return asyncio.ensure_future(
            read_checked(item.raw_path or item.path, self.fitter.read_limit_bytes)
        )

    async def _unless_stopped(self, waited: asyncio.Future[Any]) -> bool:
        """Wait for `waited` or for the run to stop, whichever comes first; True if `waited`
        is done (else it is cancelled). A read stuck on a hung mount, or a database that stays
        away, never holds up a stop."""
        if not waited.done():
            stopped = asyncio.ensure_future(self.stop.wait())
            try:
                await asyncio.wait({waited, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
        if not waited.done():
            waited.cancel()
            return False
        return True

    async def _process(self, item: ClaimedItem, reading: asyncio.Future[Read] | None) -> Outcome:
        release = Outcome(item.id, ItemStatus.PENDING, item.attempts)
        if self.stop.is_set() or reading is None:
            return release
        if not await self._unless_stopped(reading):
            return release  # its item goes back to pending, unsent
        checked = reading.result()
        copy = await self._copy(item, checked) if isinstance(checked, Checked) else None
        if copy is not None and copy.status is ItemStatus.PENDING:
            return copy  # the database is away: back to pending, unsent
        if copy is not None or not isinstance(checked, Checked):
            return self._without_call(item, checked, copy)
        upload = await self.fitter.upload(checked.data)  # fitted, if over the API's limit
        if isinstance(upload, tuple):
            return self._without_call(item, Refused(*upload, checked.sha256), None)
        # Results that cannot be written would be paid for in vain: no call starts until the
        # database takes writes again (the writer rides it out, or the run stops).
        back = self.writable
        if not back.is_set() and not await self._unless_stopped(asyncio.ensure_future(back.wait())):
            return release
        probe = await self.breaker.turn()
        try:
            await self.governor.acquire()
            if self.stop.is_set() or not self.writable.is_set():  # spend nothing
                return release
            if (
                self.lease is not None
                and item.lease is not None
                and not await self.lease.holds(item.lease, self.stop)
            ):
                return release  # taken over while this process was silent, or stopping
            if self.max_requests is not None and self.stats.calls >= self.max_requests:
                self.on_stop("request cap", None)
                return release
            self.stats.calls += 1
            allowed, hold = await self._reserve()
            if not allowed:
                return release  # no call left today: the budget stopped the run
            started_at = utcnow()
            with self.concurrency.call():
                answer = await self.client.recognize(
                    upload.data, upload.filename, upload.content_type
                )
            outage = self.breaker.is_open
            self.breaker.on_answer(answer)
        finally:
            if probe:
                self.breaker.end_probe()
        return self._after_call(item, checked, upload, answer, started_at, outage, hold)

    def _after_call(
        self,
        item: ClaimedItem,
        checked: Checked,
        upload: Upload,
        answer: Answer,
        started_at: datetime,
        outage: bool,
        hold: Hold | None,
    ) -> Outcome:
        """What the answer makes of the item, counted, logged and recorded as sent."""
        self._count(answer)
        self.governor.on_answer(answer)
        log.debug(
            "call %s: %s %s in %.0f ms",
            item.path,
            answer.code,
            answer.verdict.value,
            answer.latency_s * 1000,
        )
        self._stop_if_hopeless(answer)
        outcome = with_hold(self.policy.outcome(item, answer, started_at, outage=outage), hold)
        # The item records the file as it was sent, not as the scan saw it.
        outcome = dataclasses.replace(
            outcome, size=checked.size, mtime=checked.mtime, sha256=checked.sha256
        )
        outcome = with_fit(outcome, upload.fit)  # its boxes in the original's pixels
        if outcome.status is ItemStatus.PENDING and answer.verdict is not Verdict.FATAL:
            self.stats.retries += 1
        return _dated(item, checked, outcome)

    async def _copy(self, item: ClaimedItem, checked: Checked) -> Outcome | None:
        """`item` done from a recognition of the same content, if dedupe finds one; pending
        again, unsent, when the database could not be asked (away past the ride-out, when the
        writer stops the run too)."""
        if self.dedupe is None:
            return None
        try:
            return await self.dedupe.before_call(item, checked)
        except DatabaseError as exc:
            log.warning("%s: back to pending, unsent (its content was not looked up)", exc)
            return Outcome(item.id, ItemStatus.PENDING, item.attempts)

    def _without_call(self, item: ClaimedItem, checked: Read, copy: Outcome | None) -> Outcome:
        """The outcome of an item that costs no call: a skip, or a copy."""
        if not isinstance(checked, Checked):
            reason, message = checked
            skip = Outcome(item.id, ItemStatus.SKIPPED, item.attempts, reason, message)
            return dataclasses.replace(skip, sha256=checked.sha256)
        assert copy is not None
        self.stats.copies += copy.is_copy
        self.stats.unchanged += copy.unchanged
        return _dated(item, checked, copy)

    async def _reserve(self) -> tuple[bool, Hold | None]:
        """Under --daily-budget, the call held in the database first (False: none left)."""
        if self.budget is None:
            return True, None
        hold = await self.budget.reserve()
        if hold is None:
            self.stats.calls -= 1  # counted before the await, which the request cap reads
        return hold is not None, hold

    def _count(self, answer: Answer) -> None:
        if answer.reached:
            self._answered = True
            if answer.verdict is not Verdict.OUTAGE:  # a timeout is no answer's latency
                self.concurrency.answered(answer.latency_s)
        else:
            self.stats.calls -= 1  # nothing reached the API: no call was paid for

    def _stop_if_hopeless(self, answer: Answer) -> None:
        """End the run on an answer that no later call can improve."""
        verdict = answer.verdict
        if verdict is Verdict.FATAL:
            self.on_stop("fatal", _fatal_line(answer))
        elif verdict is Verdict.THROTTLE:
            throttled_s = self.governor.throttled_for_s()
            if throttled_s > self.breaker.max_outage_s:
                self.on_stop(
                    "throttle",
                    f"the API has refused every call for its call limit for {throttled_s:.0f}s "
                    f"({answer.code}): items stay pending, run again later",
                )
        elif is_refusal(answer.code) and not self._answered:
            now = time.monotonic()
            self._refused_since = self._refused_since or now
            if now - self._refused_since > REFUSED_GRACE_S:
                self.on_stop(
                    "fatal",
                    f"nothing answers at {self.client.endpoint}: connection refused for "
                    f"{now - self._refused_since:.0f}s; check --endpoint",
                )
