"""The worker pool: check each file locally, spend one rate-limited call on it, classify.

`concurrency` tasks take claimed items from a bounded queue, share one limiter (the request
rate), and hand every item's `Outcome` to the writer: exactly one outcome per claimed item,
whatever happens, so the claimer's count of outstanding items always comes back to zero.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiofiles
from aiolimiter import AsyncLimiter

from pipeline.client import NhnClient
from pipeline.outcomes import Answer, Kind, Outcome
from pipeline.store import ClaimedItem, utcnow

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 5 * 1024 * 1024
UNKNOWN_CODE_MAX_ATTEMPTS = 3
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_limiter(rate_per_s: float) -> AsyncLimiter:
    # A bucket of one request, leaking at the rate: calls are spaced 1/rate apart from the very
    # first, with no start-up burst that a per-second quota would refuse.
    return AsyncLimiter(1, 1.0 / rate_per_s)


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

    def outcome(self, item: ClaimedItem, answer: Answer) -> Outcome:
        """What `answer` makes of `item`: done, failed, or pending again for a later retry."""
        attempts = item.attempts + 1
        latency_ms = round(answer.latency_s * 1000)
        if answer.kind is Kind.DONE:
            return Outcome(
                item.id,
                "done",
                attempts,
                recognition=answer.recognition,
                latency_ms=latency_ms,
                called=True,
            )
        if answer.kind is Kind.FATAL:
            # The run stops; the item is untouched and stays pending for the next run.
            return Outcome(item.id, "pending", item.attempts, called=True)
        limit = self.max_attempts
        if answer.kind is Kind.UNKNOWN:
            limit = min(limit, UNKNOWN_CODE_MAX_ATTEMPTS)
        if answer.kind is Kind.PERMANENT or attempts >= limit:
            return Outcome(item.id, "failed", attempts, answer.code, answer.message, called=True)
        return Outcome(
            item.id,
            "pending",
            attempts,
            answer.code,
            answer.message,
            next_attempt_at=self.next_attempt_at(attempts, utcnow()),
            called=True,
        )


def sniff_type(head: bytes) -> tuple[str, str] | None:
    """(file name to send, content type) by magic bytes, or None for neither JPEG nor PNG."""
    if head.startswith(JPEG_MAGIC):
        return "image.jpg", "image/jpeg"
    if head.startswith(PNG_MAGIC):
        return "image.png", "image/png"
    return None


async def read_checked(path: str) -> bytes | tuple[str, str]:
    """The file's bytes, or (reason, message) when the API would reject it: no call spent."""
    try:
        async with aiofiles.open(path, "rb") as f:
            data = await f.read(MAX_IMAGE_BYTES + 1)
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
    limiter: AsyncLimiter
    policy: RetryPolicy
    claimed: asyncio.Queue[ClaimedItem | None]
    results: asyncio.Queue[Outcome]
    stop: asyncio.Event
    on_fatal: Callable[[Answer], None]
    stats: PoolStats = field(default_factory=PoolStats)

    async def run(self) -> None:
        """Process claimed items until the `None` sentinel arrives."""
        while (item := await self.claimed.get()) is not None:
            try:
                outcome = await self._process(item)
            except Exception as exc:  # a bug must not lose the item: put it back for later
                log.exception("unexpected error on item %s", item.id)
                message = self.client.redact(repr(exc))[:500]
                outcome = Outcome(item.id, "pending", item.attempts, "internal", message)
            await self.results.put(outcome)

    async def _process(self, item: ClaimedItem) -> Outcome:
        if self.stop.is_set():
            return Outcome(item.id, "pending", item.attempts)
        checked = await read_checked(item.path)
        if isinstance(checked, tuple):
            reason, message = checked
            return Outcome(item.id, "skipped", item.attempts, reason, message)
        filename, content_type = sniff_type(checked[:8])  # type: ignore[misc]
        async with self.limiter:
            if self.stop.is_set():  # stopped while waiting for a slot: spend nothing
                return Outcome(item.id, "pending", item.attempts)
            self.stats.calls += 1
            self.stats.in_flight += 1
            try:
                answer = await self.client.recognize(checked, filename, content_type)
            finally:
                self.stats.in_flight -= 1
        self.stats.by_code[answer.code] = self.stats.by_code.get(answer.code, 0) + 1
        if answer.kind is Kind.FATAL:
            self.on_fatal(answer)
        outcome = self.policy.outcome(item, answer)
        if outcome.status == "pending" and answer.kind is not Kind.FATAL:
            self.stats.retries += 1
        return outcome
