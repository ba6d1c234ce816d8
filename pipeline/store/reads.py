"""Reads: plate reads streamed for export, items listed, what a dry run compares a scan with,
and read-only SQL for the demo and tests. Nothing here writes."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from sqlalchemy import (
    func,
    select,
    text,
)

from pipeline.db import display_url, parse_url
from pipeline.preflight import in_daemon_thread
from pipeline.records import (
    Job,
    KnownFile,
)
from pipeline.schema import items, jobs, plates, recognitions
from pipeline.store.contents import SqliteContents
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
    async def find_recognitions(self, asked: dict[int, str]) -> dict[int, tuple[int, int]]:
        """For items -> the content each read (SHA-256): item -> (a recognition of the same
        content, any job: its item; the item whose call paid for it), the item's own first.
        Items whose content was never recognized are left out. One read transaction (on
        SQLite, one hand-off to a thread) for a whole batch: a look-up each would cost more
        than the rest of an image."""
        if not self._postgres and self._contents is not None:
            return await in_daemon_thread(self._contents.find, asked)
        payer = func.coalesce(items.c.copy_of, items.c.id)
        own = (
            select(recognitions.c.item_id, recognitions.c.sha256, payer)
            .join(items, items.c.id == recognitions.c.item_id)
            .where(recognitions.c.item_id.in_(list(asked)))
        )
        # The first recognition of each content: by the content index, then its payer.
        first = (
            select(recognitions.c.sha256, func.min(recognitions.c.item_id).label("item_id"))
            .where(recognitions.c.sha256.in_(set(asked.values())))
            .group_by(recognitions.c.sha256)
            .subquery()
        )
        other = select(first.c.sha256, first.c.item_id, payer).join(
            items, items.c.id == first.c.item_id
        )
        async with self._begin(writes=False) as connection:
            found = {
                item: (item, paid)
                for item, sha256, paid in await connection.execute(own)
                if asked[item] == sha256
            }
            if len(found) < len(asked):
                by_content = {s: (i, p) for s, i, p in await connection.execute(other)}
                for item, sha256 in asked.items():
                    if item not in found and sha256 in by_content:
                        found[item] = by_content[sha256]
        return found

    @functools.cached_property
    def _contents(self) -> SqliteContents | None:
        """A SQLite file's own look-up connection (None: in memory, the engine's only)."""
        database = parse_url(self.url).database
        if not database or database == ":memory:":
            return None
        return SqliteContents(os.path.abspath(database), display_url(self.url))

    def _close_contents(self) -> None:
        if self.__dict__.get("_contents") is not None:
            self._contents.close()  # type: ignore[union-attr]

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
