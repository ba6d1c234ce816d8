"""The records that travel between the stages: what the API answered, and what an item became."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Kind(StrEnum):
    """What one API answer means for the item and for the run (SPEC's result-code table)."""

    DONE = "done"
    RETRY = "retry"  # transient: try the item again later
    UNKNOWN = "unknown"  # an undocumented code: retried a few times, then failed
    PERMANENT = "permanent"  # the item can never succeed: failed with the code
    FATAL = "fatal"  # no call can succeed: stop the run, items stay pending


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


@dataclass(frozen=True, slots=True)
class Answer:
    """One API call's result, classified."""

    kind: Kind
    code: str  # the NHN resultCode as text, or a transport reason such as `timeout`
    message: str
    latency_s: float
    http_status: int | None = None
    recognition: Recognition | None = None
    retry_after_s: float | None = None  # a gateway's Retry-After, a minimum pause for the pool


@dataclass(frozen=True, slots=True)
class Call:
    """One API call spent on an item, for the `attempts` table."""

    started_at: datetime
    answer: Answer
    result: str  # done | retry | failed | fatal | paused (an outage: the attempt is not counted)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the writer records for one claimed item, in one transaction with its batch."""

    item_id: int
    status: str  # done | pending | failed | skipped
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
