"""The worker registry: which processes work on a job, whether each is alive (heartbeats by
the database's clock, the process identity on this host, and on PostgreSQL an advisory lock
each worker's own connection holds), and clearing the dead so their items go back to pending."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    delete,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from pipeline import liveness
from pipeline.errors import DatabaseError, JobBusyError
from pipeline.records import (
    Coordination,
    Job,
    LiveWorker,
    WorkerKind,
)
from pipeline.schema import items, jobs, workers
from pipeline.store.engine import StoreBase, is_transient, retried
from pipeline.store.queue import reclaim

log = logging.getLogger(__name__)


# A worker silent this long (by the database's clock) is dead and its leases expire; its
# heartbeat comes every second. Environment: operators with long GC or VM pauses raise it,
# tests lower it.
HEARTBEAT_TIMEOUT_ENV = "PLATEPIPE_HEARTBEAT_TIMEOUT_S"
HEARTBEAT_TIMEOUT_S = 30.0
# PostgreSQL advisory lock keys (the two-int form): the first names the purpose.
REGISTRY_LOCK = 0x504C5031  # held while a job's workers register: one at a time per job
WORKER_LOCK = 0x504C5032  # held by each worker's own connection while its process lives


class RegistryMixin(StoreBase):
    @retried
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
                    advice = "; wait for it to end or stop it"
                    raise _busy(job, other.pid, other.host, other.kind, age, advice)
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

    @retried
    async def coordinate(
        self,
        job: Job,
        worker_id: str,
        rate_share: float | None = None,
        concurrency: int | None = None,
        latency_ms: float | None = None,
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
                .values(
                    heartbeat_at=self._now_sql(),
                    rate_share=rate_share,
                    concurrency=concurrency,  # calls in flight allowed and latency, for status
                    latency_ms=latency_ms,
                )
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
            reclaimed = await reclaim(connection, job, now)
            halted = (
                await connection.execute(select(jobs.c.halted).where(jobs.c.id == job.id))
            ).scalar_one()
        return Coordination(live=max(len(live), 1), reclaimed=reclaimed, halted=halted, lost=lost)

    async def _reap(
        self, connection: AsyncConnection, job: Job, now: datetime, me: str | None = None
    ) -> list[Any]:
        """Delete the job's dead workers (`queue.reclaim` then frees their items); the live ones.
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
            raise DatabaseError(self._describe(exc), transient=is_transient(exc)) from exc
        self._held.connection = connection

    async def _keep_worker_lock(self, worker_id: str) -> None:
        """Take this worker's lock again if its connection was lost (a database restart, a
        terminated backend): peers that looked meanwhile took it for dead, which its next
        heartbeat tells it; those that look later see it alive."""
        if not self._postgres:
            return
        connection = self._held.connection
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
        connection, self._held.connection = self._held.connection, None
        if connection is not None:
            with contextlib.suppress(SQLAlchemyError, OSError):
                await connection.invalidate()  # closed, not pooled: the lock goes with it

    @retried
    async def unregister_worker(self, worker_id: str) -> None:
        async with self._begin() as connection:
            await connection.execute(delete(workers).where(workers.c.id == worker_id))
        await self._drop_worker_lock()

    @retried
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
                worker = LiveWorker(
                    r.host, r.pid, r.kind, age, r.held, r.rate_share, r.concurrency, r.latency_ms
                )
                live.setdefault(r.job_id, []).append(worker)
        return live

    async def _refuse_if_worked(self, connection: AsyncConnection, job: Job) -> None:
        """JobBusyError while a run or `work` process is live on the job (the liveness test
        `register_worker` applies): it would send again what is re-queued under it."""
        live = (await self._live_workers(connection, [job.id])).get(job.id)
        if live:
            other = live[0]
            raise _busy(job, other.pid, other.host, other.kind, other.heartbeat_age_s,
                        ": retry when it has ended")  # fmt: skip


def _busy(job: Job, pid: int, host: str, kind: str, age_s: float, advice: str) -> JobBusyError:
    return JobBusyError(
        f"job {job.name!r} is being processed by pid {pid} on {host} "
        f"(`{kind}`, heartbeat {age_s:.0f}s ago){advice}"
    )


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
