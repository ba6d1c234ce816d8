"""Jobs: finding and creating them, halting one, re-queueing its items (`retry`), and the
summaries `status` and `jobs` show."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    and_,
    func,
    literal,
    or_,
    select,
    union_all,
    update,
)

from pipeline.errors import JobNotFoundError
from pipeline.records import (
    Job,
    JobSummary,
    LiveWorker,
    utcnow,
)
from pipeline.schema import STATUSES, attempts, items, jobs, recognitions
from pipeline.store.engine import retried, touch
from pipeline.store.registry import RegistryMixin

RATE_WINDOW_S = 60.0  # `status` reports the call rate over this last stretch


class JobsMixin(RegistryMixin):
    """Jobs use the registry: `requeue` is refused while a worker is live on the job, and a
    summary lists the live workers."""

    @retried
    async def find_job(self, name: str) -> Job | None:
        async with self._begin(writes=False) as connection:
            row = (
                await connection.execute(select(jobs.c.id, jobs.c.name).where(jobs.c.name == name))
            ).first()
        return Job(row.id, row.name) if row else None

    async def job(self, name: str) -> Job:
        """The job called `name`; JobNotFoundError (exit 2) when there is none."""
        found = await self.find_job(name)
        if found is None:
            raise JobNotFoundError(f"no job named {name!r}")
        return found

    @retried
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

    @retried
    async def halt(self, job: Job, reason: str) -> None:
        """Stop every worker of the job (they look at their next coordination)."""
        async with self._begin() as connection:
            await connection.execute(update(jobs).where(jobs.c.id == job.id).values(halted=reason))

    @retried
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
            codes = (await connection.execute(_error_codes(job_ids))).all()
            live = await self._live_workers(connection, job_ids)
            now = utcnow()
            since = now - timedelta(seconds=RATE_WINDOW_S)
            recent = {
                job_id: (calls, first)
                for job_id, calls, first in (await connection.execute(_calls_since(since))).all()
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

    @retried
    async def requeue(
        self, job: Job, codes: Sequence[str] = (), *, include_done: bool = False
    ) -> int:
        """Failed items (only those with `codes`, which may name skipped items' reasons too)
        back to pending with their attempts reset; `include_done` re-queues done items as
        well, whose results stay until new ones replace them: their contents' recognitions,
        in any job, are no longer copied from (`recognitions.sha256` cleared), so each is paid
        for again. The number re-queued."""
        if codes:
            chosen = and_(items.c.status.in_(("failed", "skipped")), items.c.error_code.in_(codes))
        else:
            chosen = items.c.status == "failed"
        if include_done:
            chosen = or_(chosen, items.c.status == "done")
        now = utcnow()
        async with self._begin() as connection:
            await self._refuse_if_worked(connection, job)
            if include_done:
                done = select(items.c.sha256).where(
                    items.c.job_id == job.id, items.c.status == "done", items.c.sha256.is_not(None)
                )
                await connection.execute(
                    update(recognitions).where(recognitions.c.sha256.in_(done)).values(sha256=None)
                )
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
                await touch(connection, job, now)
        return result.rowcount or 0


def _rate(calls: int, first: datetime | str | None, now: datetime) -> float:
    """Calls a second over the window, or over the part of it since the job's first call in
    it, so a run that began a few seconds ago is not reported at a fraction of its pace."""
    if not calls or first is None:
        return 0.0
    if isinstance(first, str):  # SQLite hands back text from an aggregate
        first = datetime.fromisoformat(first)
    elapsed_s = (now - first).total_seconds()
    return calls / min(max(elapsed_s, 1.0), RATE_WINDOW_S)


def _error_codes(job_ids: Sequence[int]) -> Any:
    """(job, code, items) of the jobs' failed and skipped items."""
    return (
        select(items.c.job_id, items.c.error_code, func.count())
        .where(
            items.c.job_id.in_(job_ids),
            items.c.status.in_(("failed", "skipped")),
            items.c.error_code.is_not(None),
        )
        .group_by(items.c.job_id, items.c.error_code)
    )


def _calls_since(since: datetime) -> Any:
    """(job, calls, first call's start) of the calls started since `since`, per job."""
    return (
        select(items.c.job_id, func.count(), func.min(attempts.c.started_at))
        .select_from(attempts.join(items, items.c.id == attempts.c.item_id))
        .where(attempts.c.started_at >= since)
        .group_by(items.c.job_id)
    )


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
