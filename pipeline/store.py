"""Every SQL statement platepipe runs. The items table is the queue.

Workers, the scanner and the CLI call named methods (`add_items`, `claim_batch`,
`record_outcomes`, ...) and never see SQL. Errors from the driver become `DatabaseError` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import operator
import os
import socket
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    inspect,
    literal,
    literal_column,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pipeline import db, liveness
from pipeline.errors import DatabaseError, JobBusyError, JobNotFoundError
from pipeline.records import (
    Added,
    CallResult,
    ClaimedItem,
    Coordination,
    Found,
    Job,
    JobSummary,
    KnownFile,
    LiveWorker,
    Outcome,
    PendingState,
    WorkerKind,
    utcnow,
)
from pipeline.schema import STATUSES, attempts, items, jobs, plates, recognitions, workers

log = logging.getLogger(__name__)

# A worker silent this long (by the database's clock) is dead and its leases expire; its
# heartbeat comes every second. Environment: operators with long GC or VM pauses raise it,
# tests lower it.
HEARTBEAT_TIMEOUT_ENV = "PLATEPIPE_HEARTBEAT_TIMEOUT_S"
HEARTBEAT_TIMEOUT_S = 30.0
CLOCK_SHIFT_IGNORED = timedelta(seconds=1)  # a host this close to the database's clock is on it
# PostgreSQL advisory lock keys (the two-int form): the first names the purpose.
REGISTRY_LOCK = 0x504C5031  # held while a job's workers register: one at a time per job
WORKER_LOCK = 0x504C5032  # held by each worker's own connection while its process lives
DB_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # then every 5 s, within `Store.ride_out_s`
RATE_WINDOW_S = 60.0  # `status` reports the call rate over this last stretch
EXPORT_CHUNK = 1000  # rows fetched at a time while exporting

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


def _is_transient(exc: BaseException) -> bool:
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


def _retried(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Retry `method` on transient database errors for up to the store's `ride_out_s`.

    Safe because every retried method is idempotent or harmless to repeat: a claim whose
    answer was lost leaves items leased to this run, which the claimer gives back. While
    the database is away, `Store.writable` is clear, so no API call starts whose answer
    could not be stored.
    """

    @functools.wraps(method)
    async def wrapper(self: Store, *args: Any, **kwargs: Any) -> T:
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


def _requeue_row(item_id: int, f: Found, now: datetime) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "new_size": f.size,
        "new_mtime": f.mtime,
        "new_camera": f.camera,
        "new_captured_at": f.captured_at,
        "now": now,
    }


# A changed file starts over; an item in flight (claimed since the look-up) is left alone.
_REQUEUE = (
    update(items)
    .where(items.c.id == bindparam("item_id"), items.c.status != "running")
    .values(
        size=bindparam("new_size"),
        mtime=bindparam("new_mtime"),
        camera=bindparam("new_camera"),
        captured_at=bindparam("new_captured_at"),
        status="pending",
        attempts=0,
        error_code=None,
        error_message=None,
        next_attempt_at=None,
        updated_at=bindparam("now"),
    )
)


def requeues(known: KnownFile, found: Found) -> bool:
    """A rescan queues a known file again when it changed (size or mtime) since, unless it
    is in flight: one rule for `add_items` and the dry run that predicts it."""
    return (known.size != found.size or known.mtime != found.mtime) and known.status != "running"


def _recaptures(found: Found, camera: str | None, captured_at: datetime | None) -> bool:
    """The path pattern tells something the item does not hold yet."""
    return (found.camera is not None and found.camera != camera) or (
        found.captured_at is not None and found.captured_at != captured_at
    )


# A later --capture-pattern re-dates items already known, at no call: what it finds wins.
_RECAPTURE = (
    update(items)
    .where(items.c.id == bindparam("item_id"))
    .values(
        camera=func.coalesce(bindparam("new_camera", type_=Text), items.c.camera),
        captured_at=func.coalesce(
            bindparam("new_captured_at", type_=items.c.captured_at.type), items.c.captured_at
        ),
        updated_at=bindparam("now"),
    )
)


async def _touch(connection: AsyncConnection, job: Job, now: datetime, *, calls: int = 0) -> None:
    """The job's last activity (what `status` and `jobs` show) is now; `calls` more made."""
    values: dict[str, Any] = {"updated_at": now}
    if calls:
        values["calls"] = jobs.c.calls + calls
    await connection.execute(update(jobs).where(jobs.c.id == job.id).values(**values))


# What the scanner writes of a new item, in this order (the rest is the schema's defaults).
_NEW_ITEM_COLUMNS = (
    "job_id", "path", "raw_path", "camera", "captured_at", "size", "mtime", "created_at",
    "updated_at",
)  # fmt: skip


def _bind(type_: Any, dialect: Any) -> Callable[[datetime | None], Any]:
    """The column type's own conversion of a datetime for the driver."""
    processor = type_.dialect_impl(dialect).bind_processor(dialect)
    return lambda value: processor(value) if processor is not None and value is not None else value


class _BulkInsert:
    """A million-row executemany without SQLAlchemy's per-row work.

    The statement is compiled once for the dialect; each row is a plain tuple put into the
    compiled parameter order in C. The driver takes the values as they are, so the only
    conversion, datetimes, is done by the column type's own bind processor, once per value
    that is not None.
    """

    def __init__(self, statement: Any, columns: Sequence[str], dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(columns))
        self.sql = compiled.string
        self.reorder = operator.itemgetter(*(columns.index(k) for k in compiled.positiontup))
        self.stamp = _bind(DateTime(), dialect)
        self.stamp_seconds = _bind(items.c.captured_at.type, dialect)

    async def execute(self, connection: AsyncConnection, rows: Iterable[tuple]) -> int:
        """Rows inserted (SQLite's driver counts them; asyncpg says -1)."""
        result = await connection.exec_driver_sql(self.sql, [self.reorder(row) for row in rows])
        return result.rowcount


class Store:
    def __init__(self, engine: AsyncEngine, url: str) -> None:
        self.engine = engine
        self.url = url
        # 0 for one-shot commands (fail fast, exit 1); a run sets `--max-db-outage`.
        self.ride_out_s = 0.0
        self.heartbeat_timeout_s = heartbeat_timeout_s()
        self._worker_lock: AsyncConnection | None = None  # PostgreSQL: see _hold_worker_lock
        # Clear while the database refuses writes for a reason a retry can cure.
        self.writable = asyncio.Event()
        self.writable.set()
        self._postgres = engine.dialect.name == "postgresql"
        self._insert = pg_insert if self._postgres else sqlite_insert
        # DO NOTHING: a scan of the same job on another machine may have been first.
        self._insert_new = self._insert(items).on_conflict_do_nothing(
            index_elements=["job_id", "path"]
        )
        self._insert_new_items = _BulkInsert(self._insert_new, _NEW_ITEM_COLUMNS, engine.dialect)

    @classmethod
    async def open(
        cls, url: str, *, migrate: bool = True, existing: bool = False, read_only: bool = False
    ) -> Store:
        """Connect (and by default bring the schema up to date); DatabaseError if unreachable.

        `existing` creates nothing: a SQLite file that is not there, or a database without
        platepipe's schema, is a one-line DatabaseError (for commands that must not make a
        database by mistake). `read_only` implies it, and opens a connection that cannot write.
        """
        existing = existing or read_only
        if existing:
            _check_sqlite_file(url)
        engine = db.create_engine(url, read_only=read_only)
        store = cls(engine, url)
        try:
            if existing:
                await store._check_schema()
            elif migrate:
                async with store._begin() as connection:
                    await db.upgrade(connection)
            else:
                async with store._begin(writes=False):
                    pass  # reachable, or a DatabaseError now
        except BaseException:
            await engine.dispose()
            raise
        return store

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

    async def close(self) -> None:
        await self._drop_worker_lock()
        await self.engine.dispose()

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
            raise DatabaseError(self._describe(exc), transient=_is_transient(exc)) from exc

    def _describe(self, exc: BaseException) -> str:
        reason = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        first_line = (str(reason).strip().splitlines() or [type(reason).__name__])[0]
        return f"database {db.display_url(self.url)}: {first_line}"

    @_retried
    async def schema_revision(self) -> str | None:
        """The database's Alembic revision."""
        async with self._begin(writes=False) as connection:
            return await db.current_revision(connection)

    # -- jobs ---------------------------------------------------------------------------------

    @_retried
    async def find_job(self, name: str) -> Job | None:
        async with self._begin(writes=False) as connection:
            row = (
                await connection.execute(select(jobs.c.id, jobs.c.name).where(jobs.c.name == name))
            ).first()
        return Job(row.id, row.name) if row else None

    @_retried
    async def ensure_job(self, name: str, *, create: bool) -> Job:
        """The job called `name`; created when `create`, else JobNotFoundError if absent."""
        if create:
            now = utcnow()
            async with self._begin() as connection:
                await connection.execute(
                    self._insert(jobs)
                    .values(name=name, created_at=now, updated_at=now)
                    .on_conflict_do_nothing(index_elements=["name"])
                )
        job = await self.find_job(name)
        if job is None:
            raise JobNotFoundError(f"no job named {name!r}: give ROOT folders to create it")
        return job

    # -- workers ------------------------------------------------------------------------------

    @_retried
    async def register_worker(
        self, job: Job, worker_id: str, *, kind: WorkerKind = WorkerKind.RUN
    ) -> int:
        """Record this process as working on `job`, after clearing workers that are dead;
        the number of other live workers.

        A `run` works alone: any other live worker on the job is an error (JobBusyError). A
        `work` process shares the job with other `work` processes, but not with a `run`. A new
        start also lifts a job-wide halt (the operator has fixed what stopped the job).
        Registrations of one job take turns (PostgreSQL: an advisory lock; SQLite: the write
        lock), so two `run`s starting at once never both get in.
        """
        await self._hold_worker_lock(worker_id)
        try:
            async with self._begin() as connection:
                if self._postgres:
                    await connection.execute(
                        select(func.pg_advisory_xact_lock(REGISTRY_LOCK, job.id))
                    )
                now = await self._clock(connection)
                live = await self._reap(connection, job, now)
                blocking = (
                    live
                    if kind == WorkerKind.RUN
                    else [w for w in live if w.kind == WorkerKind.RUN]
                )
                if blocking:
                    other = blocking[0]
                    age = (now - other.heartbeat_at).total_seconds()
                    raise JobBusyError(
                        f"job {job.name!r} is being processed by pid {other.pid} on "
                        f"{other.host} (`{other.kind}`, heartbeat {age:.0f}s ago); wait for it "
                        "to end or stop it"
                    )
                await connection.execute(
                    insert(workers).values(
                        id=worker_id,
                        job_id=job.id,
                        host=socket.gethostname(),
                        pid=os.getpid(),
                        process=liveness.process_key(),
                        kind=kind,
                        started_at=now,
                        heartbeat_at=now,
                    )
                )
                await connection.execute(
                    update(jobs).where(jobs.c.id == job.id).values(halted=None)
                )
        except BaseException:
            await self._drop_worker_lock()
            raise
        return len(live)

    @_retried
    async def coordinate(
        self, job: Job, worker_id: str, rate_share: float | None = None
    ) -> Coordination:
        """A worker's periodic look at its peers: beat (which extends the leases of its
        items), clear the dead and give their leases back to pending, and learn how many
        share the job and whether it was halted. `lost` when this worker had itself been
        taken for dead: its registration is gone and its items are not its own any more."""
        await self._keep_worker_lock(worker_id)
        async with self._begin() as connection:
            beat = await connection.execute(
                update(workers)
                .where(workers.c.id == worker_id)
                .values(heartbeat_at=self._now_sql(), rate_share=rate_share)
            )
            lost = not beat.rowcount
            if not lost:
                await connection.execute(
                    update(items)
                    .where(
                        items.c.job_id == job.id,
                        items.c.status == "running",
                        items.c.lease_owner == worker_id,
                    )
                    .values(lease_expires_at=self._now_sql(self.heartbeat_timeout_s))
                )
            now = await self._clock(connection)
            live = await self._reap(connection, job, now, me=worker_id)
            reclaimed = await self._reclaim(connection, job, now)
            halted = (
                await connection.execute(select(jobs.c.halted).where(jobs.c.id == job.id))
            ).scalar_one()
        return Coordination(live=max(len(live), 1), reclaimed=reclaimed, halted=halted, lost=lost)

    async def _reap(
        self, connection: AsyncConnection, job: Job, now: datetime, me: str | None = None
    ) -> list[Any]:
        """Delete the job's dead workers (`_reclaim` then frees their items); the live ones.
        `me`, the caller, is alive whatever its lock says (`_keep_worker_lock` mends that)."""
        rows = (await connection.execute(select(workers).where(workers.c.job_id == job.id))).all()
        locked = await self._worker_locks(connection)
        if locked is not None and me is not None:
            locked.add(_worker_lock_id(me))
        dead = [r for r in rows if self._is_dead(r, now, locked)]
        for row in dead:
            age = (now - row.heartbeat_at).total_seconds()
            log.warning(
                "taking over from `%s` pid %s on %s (heartbeat %.0fs ago): it is gone",
                row.kind, row.pid, row.host, age,
            )  # fmt: skip
        if dead:
            await connection.execute(delete(workers).where(workers.c.id.in_([r.id for r in dead])))
        gone = {r.id for r in dead}
        return [r for r in rows if r.id not in gone]

    def _is_dead(self, worker: Any, now: datetime, locked: set[int] | None) -> bool:
        """Silent past the timeout (by the database's clock), whatever its pid; else, on
        PostgreSQL, its connection's lock released (the process ended, anywhere); else, on
        this machine, its pid gone or reused by another process."""
        if (now - worker.heartbeat_at).total_seconds() > self.heartbeat_timeout_s:
            return True
        if locked is not None and _worker_lock_id(worker.id) not in locked:
            return True
        return worker.host == socket.gethostname() and liveness.is_gone(worker.pid, worker.process)

    async def _worker_locks(self, connection: AsyncConnection) -> set[int] | None:
        """The worker locks held on this database now (PostgreSQL; None on SQLite)."""
        if not self._postgres:
            return None
        rows = await connection.execute(
            text(
                "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid = CAST(:purpose AS oid) AND objsubid = 2 AND database ="
                " (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"purpose": WORKER_LOCK},
        )
        return set(rows.scalars())

    async def _hold_worker_lock(self, worker_id: str) -> None:
        """PostgreSQL: take this worker's lock on a connection of its own, held until the
        process ends or unregisters, so peers know at once when it dies (kill -9, a reboot,
        a container stopped); the pid, which a restarted container reuses, cannot say it."""
        await self._drop_worker_lock()
        if not self._postgres:
            return
        try:
            connection = await self.engine.connect()
            try:
                # Never waits: should another live worker's id hash to the same key (one in
                # two billion), the key shows both alive and their heartbeats alone tell.
                await connection.execute(
                    select(func.pg_try_advisory_lock(WORKER_LOCK, _worker_lock_id(worker_id)))
                )
                await connection.commit()  # a session lock: it outlives the transaction
            except BaseException:
                await connection.close()
                raise
        except (SQLAlchemyError, OSError) as exc:
            raise DatabaseError(self._describe(exc), transient=_is_transient(exc)) from exc
        self._worker_lock = connection

    async def _keep_worker_lock(self, worker_id: str) -> None:
        """Take this worker's lock again if its connection was lost (a database restart, a
        terminated backend): peers that looked meanwhile took it for dead, which its next
        heartbeat tells it; those that look later see it alive."""
        if not self._postgres:
            return
        connection = self._worker_lock
        if connection is not None:
            try:
                await connection.execute(select(literal(1)))
                await connection.commit()
                return
            except (SQLAlchemyError, OSError) as exc:
                log.warning("the worker's lock connection was lost (%s): taking it again",
                            self._describe(exc))  # fmt: skip
        await self._hold_worker_lock(worker_id)

    async def _drop_worker_lock(self) -> None:
        connection, self._worker_lock = self._worker_lock, None
        if connection is not None:
            with contextlib.suppress(SQLAlchemyError, OSError):
                await connection.invalidate()  # closed, not pooled: the lock goes with it

    @_retried
    async def halt(self, job: Job, reason: str) -> None:
        """Stop every worker of the job (they look at their next coordination)."""
        async with self._begin() as connection:
            await connection.execute(update(jobs).where(jobs.c.id == job.id).values(halted=reason))

    @_retried
    async def unregister_worker(self, worker_id: str) -> None:
        async with self._begin() as connection:
            await connection.execute(delete(workers).where(workers.c.id == worker_id))
        await self._drop_worker_lock()

    @_retried
    async def live_workers(self, job_name: str) -> list[LiveWorker]:
        """The job's registered processes that are alive, oldest first, read only (the dead
        are left for the next worker to clear)."""
        async with self._begin(writes=False) as connection:
            job_id = (
                await connection.execute(select(jobs.c.id).where(jobs.c.name == job_name))
            ).scalar()
            if job_id is None:
                return []
            return (await self._live_workers(connection, [job_id])).get(job_id, [])

    async def _live_workers(
        self, connection: AsyncConnection, job_ids: Sequence[int]
    ) -> dict[int, list[LiveWorker]]:
        """Per job, its live workers by the liveness test `register_worker` applies, each
        with the items it holds (a range of the (job, status) index) and its rate share."""
        held = (
            select(func.count())
            .where(
                items.c.job_id == workers.c.job_id,
                items.c.status == "running",
                items.c.lease_owner == workers.c.id,
            )
            .scalar_subquery()
        )
        now = await self._clock(connection)
        locked = await self._worker_locks(connection)
        rows = (
            await connection.execute(
                select(workers, held.label("held"))
                .where(workers.c.job_id.in_(job_ids))
                .order_by(workers.c.started_at)
            )
        ).all()
        live: dict[int, list[LiveWorker]] = {}
        for r in rows:
            if not self._is_dead(r, now, locked):
                age = max((now - r.heartbeat_at).total_seconds(), 0.0)
                worker = LiveWorker(r.host, r.pid, r.kind, age, r.held, r.rate_share)
                live.setdefault(r.job_id, []).append(worker)
        return live

    @_retried
    async def reclaim_orphans(self, job: Job) -> int:
        """Items left `running` by workers that are no longer registered, or whose lease
        ran out, go back to pending."""
        async with self._begin() as connection:
            return await self._reclaim(connection, job, await self._clock(connection))

    async def _reclaim(self, connection: AsyncConnection, job: Job, now: datetime) -> int:
        live = select(workers.c.id).where(workers.c.job_id == job.id)
        result = await connection.execute(
            update(items)
            .where(
                items.c.job_id == job.id,
                items.c.status == "running",
                or_(
                    items.c.lease_owner.is_(None),
                    items.c.lease_owner.not_in(live),
                    items.c.lease_expires_at < now,
                ),
            )
            .values(status="pending", lease_owner=None, lease_expires_at=None)
        )
        return result.rowcount or 0

    async def _clock(self, connection: AsyncConnection) -> datetime:
        """Now, by the one clock every worker shares: PostgreSQL's (naive UTC). On SQLite,
        whose processes all run on one machine, that machine's."""
        if not self._postgres:
            return utcnow()
        return (await connection.execute(select(self._now_sql()))).scalar_one()

    def _now_sql(self, plus_s: float = 0.0) -> Any:
        """The database's now (plus `plus_s` seconds) as SQL, in the schema's naive UTC."""
        if not self._postgres:
            return literal(utcnow() + timedelta(seconds=plus_s), DateTime)
        return literal_column(f"timezone('UTC', now()) + interval '{plus_s:.3f} seconds'", DateTime)

    # -- the queue ----------------------------------------------------------------------------

    async def add_items(self, job: Job, found: Sequence[Found]) -> int:
        """Enqueue found files; the number queued (new, or changed since they were seen)."""
        return (await self.add_found(job, found)).queued

    @_retried
    async def add_found(self, job: Job, found: Sequence[Found]) -> Added:
        """Enqueue found files: how many were queued (new, or changed since they were seen)
        and how many known items took a camera or capture time from the path pattern.

        A path already in the job keeps its state, unless the file changed (size or mtime)
        since: then it is queued again and its old reads, which describe the old file, go.
        An item in flight is left alone. An unchanged item takes the camera and capture time
        the pattern now finds in its path, if they differ: re-dated at no call.

        Set-wise, never a statement per file: new paths go in by one executemany; only when
        some were known already (a rescan) are those rows looked up through the (job, path)
        index, to find the changed ones and requeue them by id.
        """
        if not found:
            return Added(0, 0)
        now = utcnow()
        new = {f.path: f for f in found}  # a path twice in one batch is one item
        bulk = self._insert_new_items
        stamp = bulk.stamp(now)
        rows = [
            (job.id, f.path, f.raw_path, f.camera, bulk.stamp_seconds(f.captured_at), f.size,
             f.mtime, stamp, stamp)
            for f in new.values()
        ]  # fmt: skip
        async with self._begin() as connection:
            if self._postgres:
                # asyncpg does not count an executemany's rows: RETURNING names the new ones.
                inserted = await connection.execute(
                    self._insert_new.returning(items.c.path),
                    [dict(zip(_NEW_ITEM_COLUMNS, row, strict=True)) for row in rows],
                )
                known = list(new.keys() - set(inserted.scalars()))
            else:
                counted = await bulk.execute(connection, rows)
                known = [] if counted == len(new) else list(new)  # which ones: see below
            if not known:
                await _touch(connection, job, now)
                return Added(len(new), 0)  # all new, as in every batch of a first scan
            known_rows = await connection.execute(self._known_items(job, known))
            queued, changed, recaptured = len(new), [], []
            for item_id, path, size, mtime, status, created_at, camera, captured_at in known_rows:
                if created_at == now:
                    continue  # inserted just now (SQLite does not say which)
                queued -= 1
                f = new[path]
                if requeues(KnownFile(status, size, mtime), f):
                    changed.append(_requeue_row(item_id, f, now))
                elif _recaptures(f, camera, captured_at):
                    recaptured.append(_requeue_row(item_id, f, now))
            if recaptured:
                await connection.execute(_RECAPTURE, recaptured)
            if changed:
                await connection.execute(_REQUEUE, changed)
                # Their old reads describe the old file.
                ids = [row["item_id"] for row in changed]
                await connection.execute(delete(plates).where(plates.c.item_id.in_(ids)))
                await connection.execute(
                    delete(recognitions).where(recognitions.c.item_id.in_(ids))
                )
            if queued or changed or recaptured:
                await _touch(connection, job, now)
        return Added(queued + len(changed), len(recaptured))

    def _known_items(self, job: Job, paths: list[str]) -> Any:
        """The job's items at `paths`, for add_items to compare with what the scan found."""
        columns = (
            items.c.id, items.c.path, items.c.size, items.c.mtime, items.c.status,
            items.c.created_at, items.c.camera, items.c.captured_at,
        )  # fmt: skip
        if not self._postgres:
            return select(*columns).where(items.c.job_id == job.id, items.c.path.in_(paths))
        # The paths as one array, joined through the (job, path) index whatever the planner's
        # statistics say (a long IN list on a table not yet analyzed scans the whole job), and
        # locked: a scan of the same job elsewhere, or a claim, waits or skips them.
        wanted = (
            func.unnest(bindparam("paths", paths, type_=ARRAY(Text)))
            .table_valued("path")
            .render_derived()
        )
        return (
            select(*columns)
            .select_from(
                wanted.join(items, and_(items.c.job_id == job.id, items.c.path == wanted.c.path))
            )
            .order_by(items.c.id)
            .with_for_update(of=items)
        )

    @_retried
    async def claim_batch(self, job: Job, worker_id: str, limit: int) -> list[ClaimedItem]:
        """Move up to `limit` due pending items to `running`, leased to `worker_id` until the
        heartbeat timeout (by the database's clock; each heartbeat extends it). None for a
        worker that is not registered (any more): one taken for dead claims nothing."""
        now = self._now_sql()
        registered = select(workers.c.id).where(workers.c.id == worker_id).exists()
        due = (
            select(items.c.id)
            .where(
                items.c.job_id == job.id,
                items.c.status == "pending",
                or_(items.c.next_attempt_at.is_(None), items.c.next_attempt_at <= now),
                registered,
            )
            .order_by(items.c.id)
            .limit(limit)
        )
        if self.engine.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        statement = (
            update(items)
            .where(items.c.id.in_(due.scalar_subquery()))
            .values(
                status="running",
                lease_owner=worker_id,
                lease_expires_at=self._now_sql(self.heartbeat_timeout_s),
                updated_at=now,
            )
            .returning(
                items.c.id,
                items.c.path,
                items.c.size,
                items.c.mtime,
                items.c.attempts,
                items.c.raw_path,
                items.c.captured_at,
                items.c.lease_owner,
            )
        )
        async with self._begin() as connection:
            rows = (await connection.execute(statement)).all()
        return sorted((ClaimedItem(*row) for row in rows), key=lambda item: item.id)

    @_retried
    async def release(self, job: Job, worker_id: str) -> int:
        """Items still leased to `worker_id` go back to pending (a run ending early)."""
        async with self._begin() as connection:
            result = await connection.execute(
                update(items)
                .where(
                    items.c.job_id == job.id,
                    items.c.status == "running",
                    items.c.lease_owner == worker_id,
                )
                .values(status="pending", lease_owner=None, lease_expires_at=None)
            )
        return result.rowcount or 0

    @_retried
    async def pending_state(self, job: Job, worker_id: str) -> PendingState:
        """What is left of the job: counted on the (job, status) index, cheap at the tail."""
        async with self._begin(writes=False) as connection:
            rows = (
                await connection.execute(
                    select(
                        items.c.status,
                        items.c.lease_owner,
                        func.count(),
                        func.min(items.c.next_attempt_at),
                    )
                    .where(items.c.job_id == job.id, items.c.status.in_(("pending", "running")))
                    .group_by(items.c.status, items.c.lease_owner)
                )
            ).all()
        state = PendingState()
        for status, owner, count, next_due in rows:
            if status == "pending":
                state.pending += count
                if next_due is not None and (state.next_due is None or next_due < state.next_due):
                    state.next_due = next_due
            elif owner == worker_id:
                state.running_mine += count
            else:
                state.running_others += count
        return state

    # -- results ------------------------------------------------------------------------------

    @_retried
    async def record_outcomes(
        self, outcomes: Sequence[Outcome], job: Job, worker_id: str | None = None
    ) -> None:
        """Store a batch in one transaction: recognitions, plates, item states, the calls.

        A recognition replaces any earlier one of the same item, so an item processed twice
        still has exactly one. A non-done outcome only applies to an item still `running`
        (under `worker_id`'s lease, when given), so a late failure never undoes a result or a
        claim of another worker.

        Fencing: with `worker_id`, the lease's token, only outcomes of items still `running`
        under it are stored; the others, whose lease ran out while this worker was silent,
        belong to whoever took them over, and are dropped (their calls are still counted).
        Times this host set (retry times, call starts) are moved onto the database's clock.
        """
        host_now = utcnow()
        async with self._begin() as connection:
            now = await self._clock(connection)
            outcomes = _on_db_clock(outcomes, now - host_now)
            paid = [o for o in outcomes if o.call is not None]
            if worker_id is not None:
                outcomes = await self._still_leased(connection, outcomes, worker_id)
            done = [o for o in outcomes if o.status == "done"]
            other = [o for o in outcomes if o.status != "done"]
            if done:
                ids = [o.item_id for o in done]
                await connection.execute(delete(plates).where(plates.c.item_id.in_(ids)))
                await connection.execute(
                    delete(recognitions).where(recognitions.c.item_id.in_(ids))
                )
                await connection.execute(insert(recognitions), list(_recognition_rows(done, now)))
                plate_rows = list(_plate_rows(done))
                if plate_rows:
                    await connection.execute(insert(plates), plate_rows)
                await connection.execute(
                    _SET_STATE.where(*_leased(worker_id)), [_state_row(o, now) for o in done]
                )
            if other:
                still_ours = [items.c.status == "running", *_leased(worker_id)]
                await connection.execute(
                    _SET_STATE.where(*still_ours), [_state_row(o, now) for o in other]
                )
            if paid:
                await connection.execute(_INSERT_ATTEMPT, [_attempt_row(o) for o in paid])
            reached = sum(o.call.answer.reached for o in paid)  # type: ignore[union-attr]
            await _touch(connection, job, now, calls=reached)

    async def _still_leased(
        self, connection: AsyncConnection, outcomes: Sequence[Outcome], worker_id: str
    ) -> Sequence[Outcome]:
        """Those of `outcomes` whose items are still `running` under `worker_id`'s lease,
        locked until the commit so that no reaper takes them meanwhile."""
        ids = [o.item_id for o in outcomes]
        if not ids:
            return outcomes
        held = select(items.c.id).where(*_leased(worker_id), items.c.id.in_(ids))
        if self._postgres:
            held = held.with_for_update()
        ours = set((await connection.execute(held)).scalars())
        paid = sum(o.call is not None for o in outcomes if o.item_id not in ours)
        if paid:
            log.warning(
                "%d answers dropped: their items were taken over while this worker was silent "
                "(another worker sends or sent them)",
                paid,
            )
        return [o for o in outcomes if o.item_id in ours]

    # -- reading ------------------------------------------------------------------------------

    @_retried
    async def summaries(self, job_name: str | None = None) -> list[JobSummary]:
        """Counts per status and error code for one job or all, newest job last.

        Fast on millions of items, while a run writes: the counts per status come from the
        (job, status, id) index alone; only failed and skipped items are read for their codes;
        the last activity is the job row's, which every write to its items brings forward.
        """
        job_filter = [] if job_name is None else [jobs.c.name == job_name]
        async with self._begin(writes=False) as connection:
            job_rows = (
                await connection.execute(
                    select(
                        jobs.c.id,
                        jobs.c.name,
                        jobs.c.created_at,
                        jobs.c.updated_at,
                        jobs.c.calls,
                        jobs.c.halted,
                    )
                    .where(*job_filter)
                    .order_by(jobs.c.id)
                )
            ).all()
            job_ids = [row.id for row in job_rows]
            counts = [
                (await connection.execute(_status_counts(job_id))).all() for job_id in job_ids
            ]
            codes = (
                await connection.execute(
                    select(items.c.job_id, items.c.error_code, func.count())
                    .where(
                        items.c.job_id.in_(job_ids),
                        items.c.status.in_(("failed", "skipped")),
                        items.c.error_code.is_not(None),
                    )
                    .group_by(items.c.job_id, items.c.error_code)
                )
            ).all()
            live = await self._live_workers(connection, job_ids)
            now = utcnow()
            recent = {
                job_id: (calls, first)
                for job_id, calls, first in (
                    await connection.execute(
                        select(items.c.job_id, func.count(), func.min(attempts.c.started_at))
                        .select_from(attempts.join(items, items.c.id == attempts.c.item_id))
                        .where(attempts.c.started_at >= now - timedelta(seconds=RATE_WINDOW_S))
                        .group_by(items.c.job_id)
                    )
                ).all()
            }
        return [
            _summary(
                job_row,
                job_counts,
                [c[1:] for c in codes if c[0] == job_row.id],
                _rate(*recent.get(job_row.id, (0, None)), now),
                tuple(live.get(job_row.id, ())),
            )
            for job_row, job_counts in zip(job_rows, counts, strict=True)
        ]

    @_retried
    async def requeue(
        self, job: Job, codes: Sequence[str] = (), *, include_done: bool = False
    ) -> int:
        """Failed items (only those with `codes`, which may name skipped items' reasons too)
        back to pending with their attempts reset; `include_done` re-queues done items as
        well, whose results stay until new ones replace them. The number re-queued."""
        if codes:
            chosen = and_(items.c.status.in_(("failed", "skipped")), items.c.error_code.in_(codes))
        else:
            chosen = items.c.status == "failed"
        if include_done:
            chosen = or_(chosen, items.c.status == "done")
        now = utcnow()
        async with self._begin() as connection:
            await self._refuse_if_worked(connection, job, now)
            result = await connection.execute(
                update(items)
                .where(items.c.job_id == job.id, chosen)
                .values(
                    status="pending",
                    attempts=0,
                    error_code=None,
                    error_message=None,
                    next_attempt_at=None,
                    updated_at=now,
                )
            )
            if result.rowcount:
                await _touch(connection, job, now)
        return result.rowcount or 0

    async def _refuse_if_worked(self, connection: AsyncConnection, job: Job, now: datetime):
        """JobBusyError while a run or `work` process is live on the job (the liveness test
        `register_worker` applies): it would send again what is re-queued under it."""
        now = await self._clock(connection)
        rows = (await connection.execute(select(workers).where(workers.c.job_id == job.id))).all()
        locked = await self._worker_locks(connection)
        live = [r for r in rows if not self._is_dead(r, now, locked)]
        if live:
            other = live[0]
            age = (now - other.heartbeat_at).total_seconds()
            raise JobBusyError(
                f"job {job.name!r} is being processed by pid {other.pid} on {other.host} "
                f"(`{other.kind}`, heartbeat {age:.0f}s ago): retry when it has ended"
            )

    async def reads(self, job: Job) -> AsyncIterator[Any]:
        """Every plate read of the job as plate_reads' columns, streamed in item order."""
        statement = (
            select(
                jobs.c.name.label("job"),
                items.c.path,
                plates.c.value,
                plates.c.conf,
                *(plates.c[k] for k in _BOX_COLUMNS),
                recognitions.c.resolution,
                recognitions.c.file_type,
                recognitions.c.recognized_at,
                items.c.camera,
                items.c.captured_at,
            )
            .select_from(
                plates.join(recognitions, recognitions.c.item_id == plates.c.item_id)
                .join(items, items.c.id == plates.c.item_id)
                .join(jobs, jobs.c.id == items.c.job_id)
            )
            .where(items.c.job_id == job.id)
            .order_by(plates.c.item_id, plates.c.idx)
        )
        async with self._begin(writes=False) as connection:
            rows = await connection.stream(statement.execution_options(yield_per=EXPORT_CHUNK))
            async for row in rows:
                yield row

    async def job_items(
        self, job: Job, statuses: Sequence[str] = (), codes: Sequence[str] = ()
    ) -> AsyncIterator[Any]:
        """The job's items (only those in `statuses`, with `codes`, when given) with their
        reasons, streamed in path order: what `platepipe items` lists."""
        statement = (
            select(
                items.c.path,
                items.c.status,
                items.c.attempts,
                items.c.error_code,
                items.c.error_message,
                items.c.camera,
                items.c.captured_at,
                items.c.updated_at,
            )
            .where(items.c.job_id == job.id)
            .order_by(items.c.path)
        )
        if statuses:
            statement = statement.where(items.c.status.in_(statuses))
        if codes:
            statement = statement.where(items.c.error_code.in_(codes))
        async with self._begin(writes=False) as connection:
            rows = await connection.stream(statement.execution_options(yield_per=EXPORT_CHUNK))
            async for row in rows:
                yield row

    async def known_files(self, job_name: str, paths: Sequence[str]) -> dict[str, KnownFile]:
        """path -> what the job knows of the file, for those of `paths` it has; {} for a
        fresh database. What `add_items` compares a scan with, read without writing."""
        query = (
            select(items.c.path, items.c.status, items.c.size, items.c.mtime)
            .join(jobs, jobs.c.id == items.c.job_id)
            .where(jobs.c.name == job_name, items.c.path.in_(paths))
        )
        rows = await self._read_if_schema(query)
        return {path: KnownFile(*rest) for path, *rest in rows or ()}

    async def unfinished_files(self, job_name: str) -> AsyncIterator[tuple[str, bytes | None]]:
        """(path, raw_path) of the job's pending and running items, which a run sends (a dead
        run's `running` ones are reclaimed at its start), streamed; none without a schema."""
        query = (
            select(items.c.path, items.c.raw_path)
            .select_from(items.join(jobs, jobs.c.id == items.c.job_id))
            .where(jobs.c.name == job_name, items.c.status.in_(("pending", "running")))
            .order_by(items.c.id)
        )
        async with self._begin(writes=False) as connection:
            if not await connection.run_sync(_has_schema):
                return
            rows = await connection.stream(query.execution_options(yield_per=EXPORT_CHUNK))
            async for path, raw_path in rows:
                yield path, raw_path

    async def _read_if_schema(self, query: Any) -> list[Any] | None:
        """The query's rows, or None when the database has no schema yet (a dry run on a
        database no run has used): read-only commands do not create it."""

        async with self._begin(writes=False) as connection:
            if not await connection.run_sync(_has_schema):
                return None
            return list((await connection.execute(query)).all())

    async def query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """Run a read-only SQL text (the demo's sample query, tests); rows as tuples."""
        async with self._begin(writes=False) as connection:
            return [tuple(row) for row in (await connection.execute(text(sql), params)).all()]


_SET_STATE = (
    update(items)
    .where(items.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        error_code=bindparam("b_error_code"),
        error_message=bindparam("b_error_message"),
        next_attempt_at=bindparam("b_next_attempt_at"),
        captured_at=func.coalesce(
            items.c.captured_at, bindparam("b_captured_at", type_=items.c.captured_at.type)
        ),
        size=func.coalesce(bindparam("b_size", type_=BigInteger), items.c.size),
        mtime=func.coalesce(bindparam("b_mtime", type_=Float), items.c.mtime),
        lease_owner=None,
        lease_expires_at=None,
        updated_at=bindparam("b_now"),
    )
)


def _state_row(outcome: Outcome, now: datetime) -> dict[str, Any]:
    return {
        "b_id": outcome.item_id,
        "b_status": outcome.status,
        "b_attempts": outcome.attempts,
        "b_error_code": outcome.error_code,
        "b_error_message": outcome.error_message,
        "b_next_attempt_at": outcome.next_attempt_at,
        "b_captured_at": outcome.captured_at,
        "b_size": outcome.size,
        "b_mtime": outcome.mtime,
        "b_now": now,
    }


# Attempts are numbered 1, 2, 3, ... per item, whatever each one's outcome: throttled, paused
# and fatal calls leave the item's `attempts` as they were, but each is still one more call.
_INSERT_ATTEMPT = insert(attempts).values(
    item_id=bindparam("b_item"),
    attempt=select(func.count() + 1)
    .where(attempts.c.item_id == bindparam("b_item"))
    .scalar_subquery(),
)


def _attempt_row(outcome: Outcome) -> dict[str, Any]:
    call = outcome.call
    assert call is not None
    answer = call.answer
    return {
        "b_item": outcome.item_id,
        "started_at": call.started_at,
        "duration_ms": round(answer.latency_s * 1000),
        "outcome": call.result,
        "code": answer.code,
        "http_status": answer.http_status,
        "message": None if call.result is CallResult.DONE else answer.message,
    }


def _recognition_rows(done: Iterable[Outcome], now: datetime) -> Iterable[dict[str, Any]]:
    for outcome in done:
        recognition = outcome.recognition
        assert outcome.call is not None and recognition is not None, "done carries its result"
        yield {
            "item_id": outcome.item_id,
            "file_type": recognition.file_type,
            "resolution": recognition.resolution,
            "latency_ms": round(outcome.call.answer.latency_s * 1000),
            "raw_response": recognition.raw,
            "result_code": recognition.result_code,
            "recognized_at": now,
        }


_BOX_COLUMNS = ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4")


def _plate_rows(done: Iterable[Outcome]) -> Iterable[dict[str, Any]]:
    for outcome in done:
        assert outcome.recognition is not None
        for idx, plate in enumerate(outcome.recognition.plates):
            box = plate.box or (None,) * len(_BOX_COLUMNS)
            yield {
                "item_id": outcome.item_id,
                "idx": idx,
                "value": plate.value,
                "conf": plate.conf,
                **dict(zip(_BOX_COLUMNS, box, strict=True)),
            }


def _on_db_clock(outcomes: Sequence[Outcome], shift: timedelta) -> Sequence[Outcome]:
    """`outcomes` with the times this host's clock set moved by `shift`, the database's clock
    less this host's: a retry due in 10 s is due in 10 s by the clock that `claim_batch` reads,
    however far this host's clock is off."""
    if abs(shift) < CLOCK_SHIFT_IGNORED:
        return outcomes
    return [
        dataclasses.replace(
            o,
            next_attempt_at=o.next_attempt_at and o.next_attempt_at + shift,
            call=o.call and dataclasses.replace(o.call, started_at=o.call.started_at + shift),
        )
        for o in outcomes
    ]


def _check_sqlite_file(url: str) -> None:
    """A SQLite URL must name a file that is there: opening one that is not creates it."""
    path = db.sqlite_path(url)
    if path is not None and not os.path.isfile(path):
        raise DatabaseError(
            f"no database at {os.path.abspath(path)}: check --db "
            "(`platepipe run` or `platepipe db upgrade` makes one)"
        )


def _has_schema(connection: Any) -> bool:
    return inspect(connection).has_table("items")


def _leased(worker_id: str | None) -> list[Any]:
    """The fencing condition: the item is still leased to `worker_id` (None: no check)."""
    if worker_id is None:
        return []
    return [items.c.status == "running", items.c.lease_owner == worker_id]


def _worker_lock_id(worker_id: str) -> int:
    """The second key of a worker's advisory lock: its id hashed into a positive int4."""
    return zlib.crc32(worker_id.encode()) & 0x7FFFFFFF


def heartbeat_timeout_s() -> float:
    """PLATEPIPE_HEARTBEAT_TIMEOUT_S, else HEARTBEAT_TIMEOUT_S."""
    given = os.environ.get(HEARTBEAT_TIMEOUT_ENV, "").strip()
    try:
        return max(float(given), 1.0) if given else HEARTBEAT_TIMEOUT_S
    except ValueError:
        log.warning("%s=%r is not a number of seconds: using %s", HEARTBEAT_TIMEOUT_ENV,
                    given, HEARTBEAT_TIMEOUT_S)  # fmt: skip
        return HEARTBEAT_TIMEOUT_S


def _rate(calls: int, first: datetime | str | None, now: datetime) -> float:
    """Calls a second over the window, or over the part of it since the job's first call in
    it, so a run that began a few seconds ago is not reported at a fraction of its pace."""
    if not calls or first is None:
        return 0.0
    if isinstance(first, str):  # SQLite hands back text from an aggregate
        first = datetime.fromisoformat(first)
    elapsed_s = (now - first).total_seconds()
    return calls / min(max(elapsed_s, 1.0), RATE_WINDOW_S)


def _status_counts(job_id: int) -> Any:
    """(status, items) of one job: a count per status, each a range of the (job, status, id)
    index, which is twice as fast as grouping the whole job's range."""
    return union_all(
        *(
            select(literal(status), func.count()).where(
                items.c.job_id == job_id, items.c.status == status
            )
            for status in STATUSES
        )
    )


def _summary(
    job_row: Any,
    counts: Sequence[tuple[str, int]],
    codes: Sequence[tuple[str, int]],
    calls_per_s: float,
    live: tuple[LiveWorker, ...],
) -> JobSummary:
    by_status = dict.fromkeys(STATUSES, 0)
    by_status.update(counts)
    return JobSummary(
        job_row.name,
        by_status,
        dict(codes),
        job_row.calls,
        job_row.created_at,
        job_row.updated_at,
        calls_per_s,
        job_row.halted,
        live,
    )


__all__ = ["ClaimedItem", "Job", "JobSummary", "LiveWorker", "Store", "utcnow"]
