"""The daily budget and the usage ledger: a call reserved before it starts (`budget_holds`),
counted in `usage` when its outcome is recorded, and `usage` read back per day and job.

The day's spend is `usage.calls` plus the holds of that day: calls counted, and calls started
but not yet counted. Reserving checks and increments it in one serial transaction (PostgreSQL:
an advisory lock; SQLite: its one write lock), so workers anywhere never overspend together.
Recording an outcome moves its hold into `usage` in the same transaction as the outcome (see
`add_usage`), so the spend never dips between the two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, exists, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pipeline.records import Outcome
from pipeline.schema import budget_holds, jobs, usage, workers
from pipeline.store.engine import StoreBase, retried
from pipeline.usage import UsageRow, holds_to_release, usage_counts

# PostgreSQL advisory lock key (the two-int form, as the registry's): held while a call is
# reserved, database-wide, whatever the job.
BUDGET_LOCK = 0x504C5033


@dataclass(frozen=True, slots=True)
class Reservation:
    granted: bool  # False: the budget is spent, or this worker is not registered any more
    spent: int | None  # when not granted, the day's spend: calls counted and calls held


class BudgetMixin(StoreBase):
    @retried
    async def reserve_call(self, worker_id: str, day: str, budget: int) -> Reservation:
        """Hold one call of `day`'s `budget` for `worker_id`, if the day's spend is under it:
        the check and the increment in one statement (a call costs one round trip here)."""
        async with self._begin() as connection:
            if self._postgres:
                await connection.execute(select(func.pg_advisory_xact_lock(BUDGET_LOCK, 0)))
            registered = exists().where(workers.c.id == worker_id)
            under = _spent_sql(day) < budget
            hold = (
                self._insert(budget_holds)
                .from_select(
                    ["worker_id", "day", "held"],
                    select(literal(worker_id), literal(day), literal(1)).where(registered, under),
                )
                .on_conflict_do_update(
                    index_elements=[budget_holds.c.worker_id, budget_holds.c.day],
                    set_={"held": budget_holds.c.held + 1},
                )
            )
            if (await connection.execute(hold)).rowcount:
                return Reservation(True, None)
            return Reservation(False, await _spent(connection, day))

    @retried
    async def day_spend(self, day: str) -> int:
        """`day`'s spend: calls counted in `usage` and calls held by live workers."""
        async with self._begin(writes=False) as connection:
            return await _spent(connection, day)

    @retried
    async def usage_since(self, first_day: str) -> list[UsageRow]:
        """`usage` per day and job from `first_day` on, newest day first, jobs by name."""
        query = (
            select(usage.c.day, jobs.c.name, usage.c.calls, usage.c.copies, usage.c.fits)
            .join(jobs, jobs.c.id == usage.c.job_id)
            .where(usage.c.day >= first_day)
            .order_by(usage.c.day.desc(), jobs.c.name)
        )
        async with self._begin(writes=False) as connection:
            rows = (await connection.execute(query)).all()
        return [UsageRow(*row) for row in rows]


def _spent_sql(day: str) -> Any:
    """`day`'s spend as one SQL expression: one statement, one snapshot, so a hold moved into
    `usage` meanwhile is counted once."""
    counted = select(func.coalesce(func.sum(usage.c.calls), 0)).where(usage.c.day == day)
    held = select(func.coalesce(func.sum(budget_holds.c.held), 0)).where(budget_holds.c.day == day)
    return counted.scalar_subquery() + held.scalar_subquery()


async def _spent(connection: AsyncConnection, day: str) -> int:
    return int((await connection.execute(select(_spent_sql(day)))).scalar_one())


_RELEASE_HOLDS = (
    update(budget_holds)
    .where(
        budget_holds.c.worker_id == bindparam("b_worker"),
        budget_holds.c.day == bindparam("b_day"),
    )
    .values(held=budget_holds.c.held - bindparam("b_n"))
)


async def add_usage(
    connection: AsyncConnection,
    insert: Callable[[Any], Any],
    outcomes: Sequence[Outcome],
    job_id: int,
) -> None:
    """In `record_outcomes`' transaction: add the calls of `outcomes` (all of them, fenced or
    not: each was paid for) to `usage`, and end their budget holds. `insert` is the dialect's
    (both take ON CONFLICT ... DO UPDATE)."""
    counts = usage_counts(outcomes, job_id)
    if counts:
        rows = [
            {"day": day, "job_id": job, "calls": c.calls, "copies": c.copies, "fits": c.fits}
            for (day, job), c in counts.items()
        ]
        upsert = insert(usage)
        upsert = upsert.on_conflict_do_update(
            index_elements=[usage.c.day, usage.c.job_id],
            set_={
                name: usage.c[name] + upsert.excluded[name] for name in ("calls", "copies", "fits")
            },
        )
        await connection.execute(upsert, rows)
    released = holds_to_release(outcomes)
    if released:
        await connection.execute(
            _RELEASE_HOLDS,
            [{"b_worker": w, "b_day": d, "b_n": n} for (w, d), n in released.items()],
        )
