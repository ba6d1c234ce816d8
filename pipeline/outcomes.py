"""The records that travel between the stages: what the API answered, and what an item became."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pipeline.verdicts import Verdict, judge


class ItemStatus(StrEnum):
    """An item's `status` column."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class CallResult(StrEnum):
    """What one call did to its item: the `attempts.outcome` column."""

    DONE = "done"
    RETRY = "retry"
    FAILED = "failed"
    FATAL = "fatal"  # the run stopped; the item stays pending, its attempts as they were
    PAUSED = "paused"  # during an outage: not counted against the item
    THROTTLED = "throttled"  # refused for the API's call limit: not counted against the item


@dataclass(frozen=True, slots=True)
class Found:
    """A file the scanner found, on its way into the items table."""

    path: str  # absolute; a name that is not UTF-8 shows its odd bytes as \xNN escapes
    size: int
    mtime: float
    raw_path: bytes | None = None  # the real name's bytes, only when they are not UTF-8
    camera: str | None = None  # from the capture pattern
    captured_at: datetime | None = None  # from the capture pattern; later EXIF or mtime


@dataclass(frozen=True, slots=True)
class Plate:
    value: str | None
    conf: float | None
    box: tuple[int, int, int, int, int, int, int, int] | None  # x1, y1, ... x4, y4


@dataclass(frozen=True, slots=True)
class Recognition:
    file_type: str | None
    resolution: str | None
    plates: tuple[Plate, ...]
    raw: str  # the response body as received, for audits and re-parsing
    result_code: int = 0  # 4000201 / 5004003: recognized without a plate, kept for review


@dataclass(frozen=True, slots=True)
class Answer:
    """One API call's result. What it means is its code's `verdict` (pipeline/verdicts.py)."""

    code: str  # the NHN resultCode as text, `http_NNN`, or a transport reason like `timeout`
    message: str
    latency_s: float
    http_status: int | None = None
    recognition: Recognition | None = None  # for a done or no-plate verdict
    retry_after_s: float | None = None  # a gateway's Retry-After, a minimum pause for the pool
    # Whether the request reached the API (a call to count): False when no connection was made
    # (refused, unknown host, a certificate that does not verify, a connect timeout); True for
    # every answer and for a request that was sent but not answered in time.
    reached: bool = True

    @property
    def verdict(self) -> Verdict:
        return judge(self.code)


@dataclass(frozen=True, slots=True)
class Call:
    """One API call spent on an item, for the `attempts` table."""

    started_at: datetime
    answer: Answer
    result: CallResult


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the writer records for one claimed item, in one transaction with its batch."""

    item_id: int
    status: ItemStatus  # done | pending | failed | skipped
    attempts: int
    error_code: str | None = None
    error_message: str | None = None
    next_attempt_at: datetime | None = None
    call: Call | None = None  # None when no call was spent (skipped, released)
    captured_at: datetime | None = None  # EXIF or mtime, for an item the path did not date
    # The file as it was read for the call: the item keeps them, so that the next scan of an
    # unchanged file finds nothing new. None: the scan's stay (no call was made).
    size: int | None = None
    mtime: float | None = None

    @property
    def recognition(self) -> Recognition | None:
        return self.call.answer.recognition if self.call else None
