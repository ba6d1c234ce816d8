"""The queue: the items table. Found files go in (`add_found`), due items are leased to a
worker (`claim_batch`) and given back (`release`, `reclaim_orphans`); `pending_state` says what
is left."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    Text,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from pipeline.records import (
    Added,
    ClaimedItem,
    Found,
    Job,
    KnownFile,
    PendingState,
    utcnow,
)
from pipeline.schema import items, workers
from pipeline.store.copies import drop_recognitions
from pipeline.store.engine import StoreBase, retried, touch


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
    is in flight: one rule for `add_found` and the dry run that predicts it."""
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

    async def execute(self, connection: AsyncConnection, rows: Iterable[tuple[Any, ...]]) -> int:
        """Rows inserted (SQLite's driver counts them; asyncpg says -1)."""
        result = await connection.exec_driver_sql(self.sql, [self.reorder(row) for row in rows])
        return result.rowcount


class QueueMixin(StoreBase):
    @functools.cached_property
    def _insert_new(self) -> Any:
        # DO NOTHING: a scan of the same job on another machine may have been first.
        return self._insert(items).on_conflict_do_nothing(index_elements=["job_id", "path"])

    @functools.cached_property
    def _insert_new_items(self) -> _BulkInsert:
        return _BulkInsert(self._insert_new, _NEW_ITEM_COLUMNS, self.engine.dialect)

    async def add_items(self, job: Job, found: Sequence[Found]) -> int:
        """Enqueue found files; the number queued (new, or changed since they were seen)."""
        return (await self.add_found(job, found)).queued

    @retried
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
        async with self._begin() as connection:
            known = await self._insert_new_paths(connection, job, new, now)
            if not known:
                await touch(connection, job, now)
                return Added(len(new), 0)  # all new, as in every batch of a first scan
            added = await self._update_known(connection, job, new, known, now)
            if added.queued or added.recaptured:
                await touch(connection, job, now)
        return added

    async def _insert_new_paths(
        self, connection: AsyncConnection, job: Job, new: dict[str, Found], now: datetime
    ) -> list[str]:
        """Insert the paths the job does not have; those it may have had (all of them on
        SQLite when any was known: its driver counts the rows, but does not say which)."""
        bulk = self._insert_new_items
        stamp = bulk.stamp(now)
        rows = [
            (job.id, f.path, f.raw_path, f.camera, bulk.stamp_seconds(f.captured_at), f.size,
             f.mtime, stamp, stamp)
            for f in new.values()
        ]  # fmt: skip
        if self._postgres:
            # asyncpg does not count an executemany's rows: RETURNING names the new ones.
            inserted = await connection.execute(
                self._insert_new.returning(items.c.path),
                [dict(zip(_NEW_ITEM_COLUMNS, row, strict=True)) for row in rows],
            )
            return list(new.keys() - set(inserted.scalars()))
        counted = await bulk.execute(connection, rows)
        return [] if counted == len(new) else list(new)

    async def _update_known(
        self,
        connection: AsyncConnection,
        job: Job,
        new: dict[str, Found],
        known: list[str],
        now: datetime,
    ) -> Added:
        """Requeue the known items whose file changed, re-date those the pattern tells more
        of; what the batch queued (new or changed) and re-dated."""
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
            # Their old reads describe the old file; those that say which content they are of
            # stay until it is read again, as what an unchanged content is done from (dedupe).
            ids = [row["item_id"] for row in changed]
            await drop_recognitions(connection, ids, unless_content_known=True)
        return Added(queued + len(changed), len(recaptured))

    def _known_items(self, job: Job, paths: list[str]) -> Any:
        """The job's items at `paths`, for add_found to compare with what the scan found."""
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

    @retried
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

    @retried
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

    @retried
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

    @retried
    async def reclaim_orphans(self, job: Job) -> int:
        """Items left `running` by workers that are no longer registered, or whose lease
        ran out, go back to pending."""
        async with self._begin() as connection:
            return await reclaim(connection, job, await self._clock(connection))


async def reclaim(connection: AsyncConnection, job: Job, now: datetime) -> int:
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


def leased(worker_id: str | None) -> list[Any]:
    """The fencing condition: the item is still leased to `worker_id` (None: no check)."""
    if worker_id is None:
        return []
    return [items.c.status == "running", items.c.lease_owner == worker_id]
