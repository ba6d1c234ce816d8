"""Reads: plate reads streamed for export, items listed, what a dry run compares a scan with,
and read-only SQL for the demo and tests. Nothing here writes."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from sqlalchemy import (
    func,
    select,
    text,
)

from pipeline.records import (
    Job,
    KnownFile,
)
from pipeline.schema import items, jobs, plates, recognitions
from pipeline.store.engine import StoreBase, has_schema, retried
from pipeline.store.results import BOX_COLUMNS

EXPORT_CHUNK = 1000  # rows fetched at a time while exporting


# plate_reads' columns (the view in migrations/ holds the same), in export's order.
_READ_COLUMNS = (
    jobs.c.name.label("job"),
    items.c.path,
    plates.c.value,
    plates.c.conf,
    *(plates.c[k] for k in BOX_COLUMNS),
    recognitions.c.resolution,
    recognitions.c.file_type,
    recognitions.c.recognized_at,
    items.c.camera,
    items.c.captured_at,
)
READ_COLUMNS = tuple(column.name for column in _READ_COLUMNS)


class ReadsMixin(StoreBase):
    async def reads(self, job: Job) -> AsyncGenerator[Any, None]:
        """Every plate read of the job as plate_reads' columns, streamed in item order."""
        statement = (
            select(*_READ_COLUMNS)
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
        fresh database. What `add_found` compares a scan with, read without writing."""
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
            if not await connection.run_sync(has_schema):
                return
            rows = await connection.stream(query.execution_options(yield_per=EXPORT_CHUNK))
            async for path, raw_path in rows:
                yield path, raw_path

    @retried
    async def find_recognition(self, sha256: str, item_id: int) -> tuple[int, int] | None:
        """A recognition of the content `sha256`, any job: (its item, the item whose call paid
        for it), `item_id`'s own first; None if the content was never recognized."""
        # Two index look-ups, never a scan of every copy of a content (a blank frame may have
        # thousands): the item's own recognition by its key, else any one by the content.
        found = select(recognitions.c.item_id, func.coalesce(items.c.copy_of, items.c.id)).join(
            items, items.c.id == recognitions.c.item_id
        )
        own = found.where(recognitions.c.item_id == item_id, recognitions.c.sha256 == sha256)
        other = found.where(recognitions.c.sha256 == sha256).limit(1)
        async with self._begin(writes=False) as connection:
            row = (await connection.execute(own)).first() or (
                await connection.execute(other)
            ).first()
        return (row[0], row[1]) if row else None

    async def recognized(self, digests: Sequence[str]) -> set[str]:
        """Those of `digests` recognized already, any job: what a dry run counts as copies."""
        query = select(recognitions.c.sha256).where(recognitions.c.sha256.in_(digests)).distinct()
        rows = await self._read_if_schema(query) if digests else None
        return {digest for (digest,) in rows or ()}

    async def _read_if_schema(self, query: Any) -> list[Any] | None:
        """The query's rows, or None when the database has no schema yet (a dry run on a
        database no run has used): read-only commands do not create it."""

        async with self._begin(writes=False) as connection:
            if not await connection.run_sync(has_schema):
                return None
            return list((await connection.execute(query)).all())

    async def query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """Run a read-only SQL text (the demo's sample query, tests); rows as tuples."""
        async with self._begin(writes=False) as connection:
            return [tuple(row) for row in (await connection.execute(text(sql), params)).all()]
