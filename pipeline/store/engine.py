"""The store's ground floor: one engine, its transactions, and riding out its outages.

Driver errors become one-line `DatabaseError`s here (`transient` when a retry can cure them);
`retried` retries a store method through a database restart for up to the store's `ride_out_s`,
clearing `writable` meanwhile. Every concern of the store (queue, results, jobs, registry,
reads) is a mixin on `StoreBase`; the `Store` facade in `__init__` composes them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    DateTime,
    inspect,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pipeline import db
from pipeline.errors import DatabaseError
from pipeline.records import (
    Job,
    utcnow,
)
from pipeline.schema import jobs

log = logging.getLogger(__name__)


DB_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # then every 5 s, within `Store.ride_out_s`

# SQLSTATE classes that a retry can cure: connection exceptions, operator intervention
# (a restart, pg_terminate_backend), serialization failures and deadlocks, insufficient
# resources (a full disk) and a server that is read-only for now (a standby, a full disk).
TRANSIENT_SQLSTATE_PREFIXES = ("08", "57P", "40001", "40P01", "53", "25006")
# SQLite's words for the same: the file is busy, the disk is full or failing, or it cannot be
# written for now. None of these is the fault of the row being written.
TRANSIENT_SQLITE_WORDS = (
    "database is locked",
    "connection is closed",
    "database or disk is full",
    "disk i/o error",
    "readonly database",
    "unable to open database file",
)

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    reason = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(reason, OSError | TimeoutError):
        return True
    sqlstate = getattr(reason, "sqlstate", None) or ""
    if sqlstate.startswith(TRANSIENT_SQLSTATE_PREFIXES):
        return True
    text = str(reason).lower()
    return any(words in text for words in TRANSIENT_SQLITE_WORDS)


def retried(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Retry `method` on transient database errors for up to the store's `ride_out_s`.

    Safe because every retried method is idempotent or harmless to repeat: a claim whose
    answer was lost leaves items leased to this run, which the claimer gives back. While
    the database is away, `Store.writable` is clear, so no API call starts whose answer
    could not be stored.
    """

    @functools.wraps(method)
    async def wrapper(self: StoreBase, *args: Any, **kwargs: Any) -> T:
        give_up_at = time.monotonic() + self.ride_out_s
        delays = iter(DB_RETRY_DELAYS_S)
        while True:
            try:
                result = await method(self, *args, **kwargs)
                self.writable.set()
                return result
            except DatabaseError as exc:
                if exc.transient:
                    self.writable.clear()
                if not exc.transient or time.monotonic() >= give_up_at:
                    raise
                delay = next(delays, DB_RETRY_DELAYS_S[-1])
                log.warning("%s; trying again in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    return wrapper


async def touch(connection: AsyncConnection, job: Job, now: datetime, *, calls: int = 0) -> None:
    """The job's last activity (what `status` and `jobs` show) is now; `calls` more made.
    Here because the queue, the results and the jobs all bring it forward."""
    values: dict[str, Any] = {"updated_at": now}
    if calls:
        values["calls"] = jobs.c.calls + calls
    await connection.execute(update(jobs).where(jobs.c.id == job.id).values(**values))


class HeldConnection:
    """A connection kept beyond a transaction (a worker's advisory lock), shared by every view
    of one store (`Store.riding_out`) so that whichever closes the store releases it."""

    def __init__(self) -> None:
        self.connection: AsyncConnection | None = None


class StoreBase:
    """What every concern of the store shares: the engine, its URL and dialect, the modes fixed
    when the store was made, and the `writable` event."""

    def __init__(
        self,
        engine: AsyncEngine,
        url: str,
        *,
        ride_out_s: float,
        heartbeat_timeout_s: float,
    ) -> None:
        self.engine = engine
        self.url = url
        # 0 for one-shot commands (fail fast, exit 1); a run's store has `--max-db-outage`.
        self.ride_out_s = ride_out_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._held = HeldConnection()  # PostgreSQL: the worker's lock, see registry
        # Clear while the database refuses writes for a reason a retry can cure.
        self.writable = asyncio.Event()
        self.writable.set()
        self._postgres = engine.dialect.name == "postgresql"
        self._insert = pg_insert if self._postgres else sqlite_insert

    async def upgrade_schema(self) -> tuple[str | None, str | None]:
        """Apply the migrations the database lacks; its revision before and after."""
        before = await self.schema_revision()
        async with self._begin() as connection:
            await db.upgrade(connection)
        return before, await self.schema_revision()

    async def _check_schema(self) -> None:
        revision = await self.schema_revision()
        where = f"database {db.display_url(self.url)}"
        if revision is None:
            raise DatabaseError(
                f"{where} has no platepipe tables (a wrong database name? "
                "`platepipe db upgrade` or a first `run` makes them)"
            )
        if revision.isdigit() and db.HEAD_REVISION.isdigit() and revision < db.HEAD_REVISION:
            raise DatabaseError(
                f"{where} is at schema revision {revision}, older than this platepipe's "
                f"{db.HEAD_REVISION}: run `platepipe db upgrade` first"
            )

    @asynccontextmanager
    async def _begin(self, *, writes: bool = True) -> AsyncIterator[AsyncConnection]:
        """One transaction; driver errors come out as one-line DatabaseErrors."""
        try:
            async with self.engine.connect() as connection:
                if writes:
                    await connection.execution_options(**{db.WRITE_OPTION: True})
                async with connection.begin():
                    yield connection
        except (SQLAlchemyError, OSError) as exc:
            raise DatabaseError(self._describe(exc), transient=is_transient(exc)) from exc

    def _describe(self, exc: BaseException) -> str:
        reason = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        first_line = (str(reason).strip().splitlines() or [type(reason).__name__])[0]
        return f"database {db.display_url(self.url)}: {first_line}"

    @retried
    async def schema_revision(self) -> str | None:
        """The database's Alembic revision."""
        async with self._begin(writes=False) as connection:
            return await db.current_revision(connection)

    async def _clock(self, connection: AsyncConnection) -> datetime:
        """Now, by the one clock every worker shares: PostgreSQL's (naive UTC). On SQLite,
        whose processes all run on one machine, that machine's."""
        if not self._postgres:
            return utcnow()
        now: datetime = (await connection.execute(select(self._now_sql()))).scalar_one()
        return now

    def _now_sql(self, plus_s: float = 0.0) -> Any:
        """The database's now (plus `plus_s` seconds) as SQL, in the schema's naive UTC."""
        if not self._postgres:
            return literal(utcnow() + timedelta(seconds=plus_s), DateTime)
        return literal_column(f"timezone('UTC', now()) + interval '{plus_s:.3f} seconds'", DateTime)


def check_sqlite_file(url: str) -> None:
    """A SQLite URL must name a file that is there: opening one that is not creates it."""
    path = db.sqlite_path(url)
    if path is not None and not os.path.isfile(path):
        raise DatabaseError(
            f"no database at {os.path.abspath(path)}: check --db "
            "(`platepipe run` or `platepipe db upgrade` makes one)"
        )


def has_schema(connection: Any) -> bool:
    return bool(inspect(connection).has_table("items"))
