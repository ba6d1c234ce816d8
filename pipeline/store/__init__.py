"""Every SQL statement platepipe runs, behind one `Store`. The items table is the queue.

Workers, the scanner and the CLI call named methods (`add_found`, `claim_batch`,
`record_outcomes`, ...) and never see SQL. Errors from the driver become `DatabaseError`s.

One module per concern, each a mixin on `engine.StoreBase` (the engine, its transactions, the
retry through outages):

    engine    opening, transactions, driver errors, riding out a restart, the `writable` event
    queue     add found files, claim, release, reclaim, what is pending
    results   a batch of outcomes in one transaction, fenced by the worker's lease
    registry  workers: register, heartbeat and coordinate, liveness, advisory locks
    jobs      find, create, halt, requeue (`retry`), summaries (uses the registry)
    reads     plate reads and items streamed, known files for the dry run, recognitions by
              content (dedupe), read-only SQL
    copies    copies stored from their source's recognition, recognitions gone stale
    budget    the daily budget's holds, the usage ledger per day and job

A store's modes are fixed when it is made: open one with

    async with Store.connect(url, ride_out_s=settings.max_db_outage_s) as store:
        ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pipeline import db
from pipeline.records import ClaimedItem, Job, JobSummary, LiveWorker, utcnow
from pipeline.store.budget import BudgetMixin, Reservation
from pipeline.store.engine import check_sqlite_file
from pipeline.store.jobs import JobsMixin
from pipeline.store.queue import QueueMixin, requeues
from pipeline.store.reads import ReadsMixin
from pipeline.store.registry import HEARTBEAT_TIMEOUT_ENV, HEARTBEAT_TIMEOUT_S, heartbeat_timeout_s
from pipeline.store.results import ResultsMixin


class Store(JobsMixin, QueueMixin, ResultsMixin, ReadsMixin, BudgetMixin):
    """The database, by concern (see the package docstring); one engine shared by all."""

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        url: str,
        *,
        migrate: bool = True,
        read_only: bool = False,
        existing: bool = False,
        ride_out_s: float = 0.0,
    ) -> AsyncIterator[Store]:
        """`async with Store.connect(url) as store:` a store, closed on the way out.

        `migrate` brings the schema up to date (else the database need only be reachable).
        `existing` creates nothing: a SQLite file that is not there, or a database without
        platepipe's schema, is a one-line DatabaseError (for commands that must not make a
        database by mistake). `read_only` implies it, and opens a connection that cannot write.
        `ride_out_s`: how long each statement is retried through a database restart (a run's
        `--max-db-outage`); 0, the default, fails at once (one-shot commands exit 1).
        """
        existing = existing or read_only
        if existing:
            check_sqlite_file(url)
        engine = db.create_engine(url, read_only=read_only)
        store = cls(engine, url, ride_out_s=ride_out_s, heartbeat_timeout_s=heartbeat_timeout_s())
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
        try:
            yield store
        finally:
            await store.close()

    async def close(self) -> None:
        self._close_contents()
        await self._drop_worker_lock()
        await self.engine.dispose()


__all__ = [
    "HEARTBEAT_TIMEOUT_ENV",
    "HEARTBEAT_TIMEOUT_S",
    "ClaimedItem",
    "Job",
    "JobSummary",
    "LiveWorker",
    "Reservation",
    "Store",
    "heartbeat_timeout_s",
    "requeues",
    "utcnow",
]
