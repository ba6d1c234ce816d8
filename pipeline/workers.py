"""The worker pool: check each file locally, spend one rate-limited call on it, classify.

`concurrency` tasks take claimed items from a bounded queue, share one limiter (the request
rate), and hand every item's `Outcome` to the writer: exactly one outcome per claimed item,
whatever happens, so the claimer's count of outstanding items always comes back to zero.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiofiles.os

from pipeline.capture import exif_taken_at, from_mtime
from pipeline.client import NhnClient
from pipeline.lease import Lease
from pipeline.outcomes import Answer, Call, Kind, Outcome
from pipeline.pacing import Breaker, OutageTooLong, RateGovernor, is_throttle
from pipeline.store import ClaimedItem, utcnow

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 5 * 1024 * 1024
UNKNOWN_CODE_MAX_ATTEMPTS = 3
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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
        attempts = item.attempts + 1
        if answer.kind is Kind.DONE:
            return Outcome(item.id, "done", attempts, call=Call(started_at, answer, "done"))
        if answer.kind is Kind.FATAL:
            # The run stops; the item is untouched and stays pending for the next run.
            call = Call(started_at, answer, "fatal")
            return Outcome(item.id, "pending", item.attempts, call=call)
        error = (answer.code, answer.message)
        if outage and answer.kind is Kind.RETRY:
            call = Call(started_at, answer, "paused")
            return Outcome(item.id, "pending", item.attempts, *error, call=call)
        if is_throttle(answer):
            # Refused for the API's call limit: the pool slows down; the image did no wrong.
            call = Call(started_at, answer, "throttled")
            later = self.next_attempt_at(1, utcnow())
            return Outcome(item.id, "pending", item.attempts, *error, later, call=call)
        limit = self.max_attempts
        if answer.kind is Kind.UNKNOWN:
            limit = min(limit, UNKNOWN_CODE_MAX_ATTEMPTS)
        if answer.kind is Kind.PERMANENT or attempts >= limit:
            return Outcome(
                item.id, "failed", attempts, *error, call=Call(started_at, answer, "failed")
            )
        return Outcome(
            item.id,
            "pending",
            attempts,
            *error,
            next_attempt_at=self.next_attempt_at(attempts, utcnow()),
            call=Call(started_at, answer, "retry"),
        )

    def after_error(self, item: ClaimedItem, message: str) -> Outcome:
        """A bug of ours on this item: retried later like a transient error, failed in the end."""
        attempts = item.attempts + 1
        if attempts >= self.max_attempts:
            return Outcome(item.id, "failed", attempts, "internal", message)
        later = self.next_attempt_at(attempts, utcnow())
        return Outcome(item.id, "pending", attempts, "internal", message, next_attempt_at=later)


def sniff_type(head: bytes) -> tuple[str, str] | None:
    """(file name to send, content type) by magic bytes, or None for neither JPEG nor PNG."""
    if head.startswith(JPEG_MAGIC):
        return "image.jpg", "image/jpeg"
    if head.startswith(PNG_MAGIC):
        return "image.png", "image/png"
    return None


def _read_head(path: str | bytes) -> bytes:
    """Up to one byte more than the API takes: enough to tell a file that is too large."""
    with open(path, "rb") as f:
        return f.read(MAX_IMAGE_BYTES + 1)


# Open, read and close in one trip to aiofiles' thread pool, not one trip each: slow network
# storage never blocks the event loop, and a small file costs one thread hand-off.
_read_head_async = aiofiles.os.wrap(_read_head)


Read = bytes | tuple[str, str]  # a file's bytes, or why it cannot be sent (reason, message)


async def read_checked(path: str | bytes) -> Read:
    """The file's bytes, or (reason, message) when the API would reject it: no call spent."""
    try:
        data = await _read_head_async(path)
    except FileNotFoundError:
        return "missing", "the file vanished since the scan"
    except IsADirectoryError:
        return "not_image", "a directory, not a file"
    except PermissionError as exc:
        return "unreadable", exc.strerror or "permission denied"
    except OSError as exc:
        return "unreadable", exc.strerror or str(exc)
    if not data:
        return "empty", "zero bytes"
    if len(data) > MAX_IMAGE_BYTES:
        return "too_large", f"over the API's {MAX_IMAGE_BYTES} bytes"
    if sniff_type(data[:8]) is None:
        return "not_image", "neither JPEG nor PNG by its first bytes"
    return data


@dataclass
class PoolStats:
    calls: int = 0
    retries: int = 0
    in_flight: int = 0
    by_code: dict[str, int] = field(default_factory=dict)


@dataclass
class WorkerPool:
    client: NhnClient
    governor: RateGovernor
    breaker: Breaker
    policy: RetryPolicy
    claimed: asyncio.Queue[ClaimedItem | None]
    results: asyncio.Queue[Outcome]
    stop: asyncio.Event
    on_stop: Callable[[str, str | None], None]  # (reason, one-line message) ends the run
    max_requests: int | None = None  # the run's cost cap, in calls
    lease: Lease | None = None  # no call for an item whose lease may have gone to another worker
    stats: PoolStats = field(default_factory=PoolStats)
    _idle: int = 0  # workers waiting for an item

    async def run(self) -> None:
        """Process claimed items until the `None` sentinel arrives.

        While one item is being processed, the file of the next item waiting in the queue is
        already being read, so the thread pool's hand-off hides behind the API's answer; one
        file ahead a worker, at most two files a worker in memory. A worker reads ahead only
        an item that no idle worker would take, so it never delays one another could start.
        """
        ahead: list[tuple[ClaimedItem | None, asyncio.Future[Read] | None]] = []
        while True:
            item, reading = ahead.pop() if ahead else await self._next()
            if item is None:
                return
            # Items beyond those the idle workers will take (a woken worker still counts as
            # idle until it has its item).
            if self.claimed.qsize() > self._idle and not self.stop.is_set():
                waiting = self.claimed.get_nowait()
                ahead.append((waiting, self._start_reading(waiting)))
            try:
                outcome = await self._process(item, reading)
            except OutageTooLong as exc:
                self.on_stop("outage", f"{exc}; items stay pending, run again later")
                outcome = Outcome(item.id, "pending", item.attempts)
            except Exception as exc:  # a bug must not lose the item
                log.exception("unexpected error on item %s", item.id)
                outcome = self.policy.after_error(item, self.client.redact(repr(exc))[:500])
            finally:
                if reading is not None:
                    reading.cancel()  # a no-op once read; else its bytes are not wanted
            await self.results.put(outcome)

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
        return asyncio.ensure_future(read_checked(item.raw_path or item.path))

    async def _process(self, item: ClaimedItem, reading: asyncio.Future[Read] | None) -> Outcome:
        release = Outcome(item.id, "pending", item.attempts)
        if self.stop.is_set() or reading is None:
            return release
        checked = await reading
        if isinstance(checked, tuple):
            reason, message = checked
            return Outcome(item.id, "skipped", item.attempts, reason, message)
        filename, content_type = sniff_type(checked[:8])  # type: ignore[misc]
        probe = await self.breaker.turn()
        try:
            await self.governor.acquire()
            if self.stop.is_set():  # stopped while waiting for a turn: spend nothing
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
            self.stats.in_flight += 1
            started_at = utcnow()
            try:
                answer = await self.client.recognize(checked, filename, content_type)
            finally:
                self.stats.in_flight -= 1
            outage = self.breaker.is_open
            self.breaker.on_answer(answer)
        finally:
            if probe:
                self.breaker.end_probe()
        self.governor.on_answer(answer)
        self.stats.by_code[answer.code] = self.stats.by_code.get(answer.code, 0) + 1
        if answer.kind is Kind.FATAL:
            self.on_stop("fatal", f"the API refused the run: {answer.code} {answer.message}")
        outcome = self.policy.outcome(item, answer, started_at, outage=outage)
        if outcome.status == "pending" and answer.kind is not Kind.FATAL:
            self.stats.retries += 1
        if outcome.status == "done" and item.captured_at is None:
            taken_at = exif_taken_at(checked) or from_mtime(item.mtime)
            outcome = dataclasses.replace(outcome, captured_at=taken_at)
        return outcome
