"""The tables, as one SQLAlchemy Core `MetaData` shared by the application and Alembic.

Only migrations in migrations/ create or change them; `tests/integration/test_migrations.py`
checks that `alembic upgrade head` yields exactly this metadata on SQLite and PostgreSQL.

All times are stored as naive UTC (`timestamp without time zone` on PostgreSQL), so the same SQL
compares them on both databases. The times people query (`captured_at`, `recognized_at`, the
attempts' `started_at`) are `Seconds`: `YYYY-MM-DD HH:MM:SS` on both, so
`captured_at = '2026-11-24 18:42:14'` finds the same rows in sqlite3 and psql. The bookkeeping
times (jobs' and items' created/updated, retry times, leases, heartbeats) keep microseconds:
ordering within a second depends on them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.types import TypeDecorator

from pipeline.records import ItemStatus

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Seconds(TypeDecorator):
    """A time to the second: stored `YYYY-MM-DD HH:MM:SS` on SQLite (not SQLAlchemy's default
    `...:SS.ffffff`) and without a fraction on PostgreSQL, the same text on both."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sqlite.DATETIME(truncate_microseconds=True))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return value.replace(microsecond=0) if isinstance(value, datetime) else value


# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
ItemId = BigInteger().with_variant(Integer(), "sqlite")

STATUSES = tuple(status.value for status in ItemStatus)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("calls", BigInteger, nullable=False, server_default="0"),  # API calls, every run
    # Why every worker of the job must stop (bad credentials, say); cleared by the next start.
    Column("halted", Text),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("name"),
)

# One row per live process working on a job: its leases name it, and its heartbeat tells the
# others whether its `running` items are really in flight or were left behind by a crash.
workers = Table(
    "workers",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("job_id", Integer, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    # boot id / PID namespace / start time: the pid is this process only while all match.
    Column("process", String(100)),
    Column("kind", String(8), nullable=False, server_default="run"),  # run (alone) | work
    # Times by the database's clock (PostgreSQL's now()), never the worker host's.
    Column("started_at", DateTime, nullable=False),
    Column("heartbeat_at", DateTime, nullable=False),
    Column("rate_share", Float),  # requests/s it keeps to, at its last heartbeat
    Column("concurrency", Integer),  # its calls in flight, at its last heartbeat
    Column("latency_ms", Float),  # the API's latency it measures, at its last heartbeat
    Index(None, "job_id"),
)

items = Table(
    "items",
    metadata,
    Column("id", ItemId, primary_key=True),
    Column("job_id", Integer, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("path", Text, nullable=False),
    # The name's bytes, only when they are not UTF-8 (`path` then shows them escaped).
    Column("raw_path", LargeBinary),
    Column("size", BigInteger, nullable=False),
    Column("mtime", Float, nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("next_attempt_at", DateTime),
    # Where and when the picture was taken: from the path pattern, else EXIF, else mtime
    # (the camera's local wall-clock time, as the archive records it).
    Column("camera", Text),
    Column("captured_at", Seconds),
    # The lease of a `running` item: the worker's registration id is the fencing token;
    # the expiry (database clock) is pushed on by each of its heartbeats.
    Column("lease_owner", String(36)),
    Column("lease_expires_at", DateTime),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    # The file's content as last read (SHA-256, hex), and the item whose call paid for this
    # one's result when its content had been recognized already (NULL: it paid itself). Not a
    # foreign key: the payer may be in another job, deleted since; the copy keeps its reads.
    Column("sha256", String(64)),
    Column("copy_of", ItemId),
    UniqueConstraint("job_id", "path"),
    CheckConstraint(f"status IN ({', '.join(repr(s) for s in STATUSES)})", name="status"),
    # Covers the claim (job, status, in id order) and `status`'s counts.
    Index(None, "job_id", "status", "id"),
)

recognitions = Table(
    "recognitions",
    metadata,
    Column(
        "item_id",
        ItemId,
        ForeignKey("items.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("file_type", String(8)),
    Column("resolution", String(16)),
    Column("latency_ms", Integer, nullable=False),
    Column("raw_response", Text, nullable=False),
    # NHN's resultCode: 0, or 4000201 / 5004003 for a picture recognized without a plate.
    Column("result_code", Integer, nullable=False, server_default="0"),
    Column("recognized_at", Seconds, nullable=False),
    # The content recognized (SHA-256, hex): what a copy of it anywhere is found by.
    Column("sha256", String(64)),
    # What was sent instead of a picture over the API's 5 MB: its bytes, the scale of its
    # sides (1.0: re-encoded only) and its JPEG quality. NULL: the file was sent as it is.
    Column("fit_bytes", Integer),
    Column("fit_scale", Float),
    Column("fit_quality", Integer),
    Index(None, "sha256"),
)

plates = Table(
    "plates",
    metadata,
    Column(
        "item_id",
        ItemId,
        ForeignKey("recognitions.item_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("idx", Integer, nullable=False),
    Column("value", Text),
    Column("conf", Float),
    *(Column(f"{axis}{n}", Integer) for n in range(1, 5) for axis in "xy"),
    PrimaryKeyConstraint("item_id", "idx"),
)

# Calls, copies and fits per local calendar day (YYYY-MM-DD) and job: `platepipe usage`, and
# what `--daily-budget` counts against.
usage = Table(
    "usage",
    metadata,
    Column("day", String(10), nullable=False),
    Column("job_id", Integer, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("calls", BigInteger, nullable=False, server_default="0"),
    Column("copies", BigInteger, nullable=False, server_default="0"),
    Column("fits", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("day", "job_id"),
)

# Calls a live worker has started under `--daily-budget` and not yet counted in `usage`:
# the day's spend is usage + holds, so workers in flight never overspend it together. A
# worker's holds go with its registration (a dead worker's are dropped when it is reaped).
budget_holds = Table(
    "budget_holds",
    metadata,
    Column("worker_id", String(36), ForeignKey("workers.id", ondelete="CASCADE"), nullable=False),
    Column("day", String(10), nullable=False),
    Column("held", Integer, nullable=False, server_default="0"),
    PrimaryKeyConstraint("worker_id", "day"),
)

# Every API call, so "why did this fail?" is one query:
#   SELECT * FROM attempts WHERE item_id = ? ORDER BY attempt
attempts = Table(
    "attempts",
    metadata,
    Column("id", ItemId, primary_key=True),
    Column("item_id", ItemId, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", Seconds, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    # done | retry | failed | fatal | paused | throttled (pipeline.outcomes.CallResult)
    Column("outcome", String(16), nullable=False),
    Column("code", String(64), nullable=False),
    Column("http_status", Integer),
    Column("message", Text),
    Index(None, "item_id"),
    Index(None, "started_at"),
)
