"""The ground floor: every record that crosses a stage, and the enums they carry.

Imports nothing of the package but `verdicts` (itself the ground floor: SPEC's code table),
so whoever needs a type imports it from here, not from the module that runs SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from pipeline.verdicts import Verdict, judge


class ItemStatus(StrEnum):
    """An item's `status` column."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class WorkerKind(StrEnum):
    """What kind of process works on a job: the `workers.kind` column."""

    RUN = "run"  # works on the job alone
    WORK = "work"  # shares the job with other `work` processes, anywhere


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
class Fit:
    """What was sent instead of a picture over the API's 5 MB (pipeline/fitting.py): a JPEG of
    `sent_bytes` at `quality`, its sides `scale` times the original's (1.0: re-encoded only)."""

    sent_bytes: int
    scale: float
    quality: int
    width: int  # the original's pixels, which the boxes are mapped back to
    height: int
    sent_width: int
    sent_height: int


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
    # What the code means, judged once here: pacing, the breaker, the policy and the log all
    # read it for every call.
    verdict: Verdict = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", judge(self.code))


@dataclass(frozen=True, slots=True)
class Hold:
    """One call reserved under `--daily-budget` (`budget_holds`): the worker that holds it and
    the local day it counts on. Recording the call's outcome turns it into usage."""

    worker_id: str
    day: str  # YYYY-MM-DD, local


@dataclass(frozen=True, slots=True)
class Call:
    """One API call spent on an item, for the `attempts` table."""

    started_at: datetime
    answer: Answer
    result: CallResult
    hold: Hold | None = None  # reserved under --daily-budget (None: no budget)


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
    fit: Fit | None = None  # set when the picture sent was fitted to the API's 5 MB
    # The content read (SHA-256, hex), kept on the item whatever the outcome; None: not read.
    sha256: str | None = None
    # A result taken, with no call, from a recognition of the same content: the item whose
    # recognition it is (this item's own, for a file touched but not changed). None: not so.
    copied_from: int | None = None
    # For a done outcome, `items.copy_of`: the item whose call paid for the result; None when
    # this item paid for it (or made no call yet).
    copy_of: int | None = None

    @property
    def recognition(self) -> Recognition | None:
        return self.call.answer.recognition if self.call else None

    @property
    def is_copy(self) -> bool:
        """Done from another item's recognition of the same content: no call (what `usage`
        counts as a copy). A file only touched, done again from its own, is `unchanged`."""
        return self.copied_from is not None and self.copied_from != self.item_id

    @property
    def unchanged(self) -> bool:
        """Done again from this item's own recognition of the same content: no call."""
        return self.copied_from == self.item_id


@dataclass(frozen=True, slots=True)
class Checked:
    """A file the API would take: its bytes, and the size and mtime they were read at."""

    data: bytes
    size: int
    mtime: float
    sha256: str | None = None  # of `data`, hashed in the thread that read it


@dataclass(frozen=True, slots=True)
class KnownFile:
    """What a job recorded of a file when it was last scanned."""

    status: str
    size: int
    mtime: float


@dataclass(frozen=True, slots=True)
class Added:
    queued: int  # new, or changed since last seen
    recaptured: int  # known, and given a camera or capture time by the path pattern


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class ClaimedItem:
    id: int
    path: str
    size: int
    mtime: float
    attempts: int
    raw_path: bytes | None = None  # the name's bytes, when they are not UTF-8
    captured_at: datetime | None = None  # None until known: the worker then reads EXIF or mtime
    lease: str | None = None  # the token it was claimed under: the worker's registration


@dataclass(frozen=True, slots=True)
class Coordination:
    live: int  # live workers on the job, this one included
    reclaimed: int  # items of dead workers put back to pending just now
    halted: str | None  # why the job was halted, if it was
    lost: bool = False  # this worker had been taken for dead: its registration is gone


@dataclass
class PendingState:
    pending: int = 0
    running_mine: int = 0
    running_others: int = 0
    next_due: datetime | None = None  # the earliest retry time of a pending item

    @property
    def left(self) -> int:
        return self.pending + self.running_mine + self.running_others


@dataclass(frozen=True, slots=True)
class LiveWorker:
    """A process registered on a job and alive, as `status` shows it."""

    host: str
    pid: int
    kind: WorkerKind
    heartbeat_age_s: float  # by the database's clock
    items_held: int = 0  # items leased to it now
    rate_share: float | None = None  # requests/s it keeps to, at its last heartbeat
    concurrency: int | None = None  # calls in flight it allows itself, at its last heartbeat
    latency_ms: float | None = None  # the API's latency it measures (p90), at its last heartbeat


@dataclass(frozen=True, slots=True)
class JobSummary:
    name: str
    counts: dict[str, int]  # status -> items
    error_codes: dict[str, int]  # error_code -> items (failed and skipped)
    calls: int  # API calls recorded over the job's life
    created_at: datetime
    last_activity: datetime | None
    calls_per_s: float = 0.0  # over the last RATE_WINDOW_S, across every process of the job
    halted: str | None = None  # why a fatal answer halted the job, until the next start
    workers: tuple[LiveWorker, ...] = ()  # the live processes working on it

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def live(self) -> bool:
        return bool(self.workers)

    @property
    def left(self) -> int:
        return self.counts["pending"] + self.counts["running"]

    @property
    def orphaned(self) -> int:
        """Items left `running` by a process that is gone: pending again at the next start.
        (With live workers, theirs are in flight; a dead peer's go back within a second.)"""
        return 0 if self.live else self.counts["running"]

    @property
    def eta_s(self) -> float | None:
        """Seconds until the pending items are through, at the recent rate; None when
        nothing is running (no rate to go by) or the rate is unknown."""
        if not self.left:
            return 0.0
        if not self.live or self.calls_per_s <= 0:
            return None
        return self.left / self.calls_per_s


def utcnow() -> datetime:
    """Now, as the database stores times: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)
