"""`--daily-budget N`: calls per local calendar day across every run, job and worker of the
database, never more.

Before each call a worker reserves one in the database (`Store.reserve_call`): the day's spend
is the calls `usage` counts plus those held by workers (started, not yet recorded); under N,
this worker's hold grows by one, else the budget is spent and the run stops (exit 3, items
pending; calls in flight finish). Recording the call's outcome moves its hold into `usage` in
the same transaction, or gives it back when the request never reached the API. A hold whose
outcome is never recorded (the process was killed mid-call: the call may well have been paid)
stays until the worker's registration goes (a clean exit, or reaping by the job's next
worker), and counts against that day meanwhile.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime

from pipeline.errors import DatabaseError
from pipeline.lease import Lease
from pipeline.progress import format_duration
from pipeline.records import Hold, Outcome
from pipeline.stopping import BUDGET_SPENT
from pipeline.store import Store
from pipeline.usage import day_ends_at, local_day

log = logging.getLogger(__name__)


class DailyBudget:
    def __init__(
        self,
        store: Store,
        lease: Lease,
        limit: int,
        on_stop: Callable[[str, str | None], None],
    ) -> None:
        self.store = store
        self.lease = lease  # its token is the worker's registration: who holds the calls
        self.limit = limit
        self.on_stop = on_stop

    async def reserve(self) -> Hold | None:
        """One call of today's budget, held for this worker; None when none may start (the
        budget is spent: the run is stopped; or this worker lost its registration)."""
        day = local_day()
        token = self.lease.token
        if not token:
            return None
        try:
            reservation = await self.store.reserve_call(token, day, self.limit)
        except DatabaseError as exc:  # away past the ride-out: the writer stops the run too
            log.warning("no call reserved under the daily budget: %s", exc)
            return None
        if reservation.granted:
            return Hold(token, day)
        if (reservation.spent or 0) >= self.limit:
            self.on_stop(BUDGET_SPENT, spent_message(self.limit, day))
        return None


def with_hold(outcome: Outcome, hold: Hold | None) -> Outcome:
    """`outcome` with its call marked as held under `hold` (recording it ends the hold)."""
    if hold is None or outcome.call is None:
        return outcome
    return dataclasses.replace(outcome, call=dataclasses.replace(outcome.call, hold=hold))


def spent_message(limit: int, day: str, now: datetime | None = None) -> str:
    """The summary's line: the budget is spent, and when the day (and the wait) ends."""
    ends = day_ends_at(day)
    left_s = (ends - (now or datetime.now().astimezone())).total_seconds()
    return (
        f"the daily budget of {limit} calls is spent for {day}; the day ends at "
        f"{ends.strftime('%Y-%m-%d %H:%M %Z')} (in {format_duration(max(left_s, 0))}); "
        "items stay pending"
    )


def spend_line(spent: int, limit: int, day: str) -> str:
    """What the summary and `status` show of the day's spend under a budget."""
    return f"  daily budget: {spent} of {limit} calls spent on {day} (all jobs, local day)"


def budget_for(
    limit: int, store: Store, lease: Lease, on_stop: Callable[[str, str | None], None]
) -> DailyBudget | None:
    """The run's budget under `--daily-budget limit`; None for 0 (no budget: nothing held)."""
    return DailyBudget(store, lease, limit, on_stop) if limit > 0 else None


async def spend_today(store: Store, limit: int) -> str | None:
    """The day's spend as the summary shows it under a budget; None without one."""
    if limit <= 0:
        return None
    day = local_day()
    return spend_line(await store.day_spend(day), limit, day)


async def left_today(store: Store | None, limit: int) -> int | None:
    """Calls the day's budget still allows (the dry run's cap); None without a budget."""
    if limit <= 0:
        return None
    try:
        spent = await store.day_spend(local_day()) if store is not None else 0
    except DatabaseError:  # a database before migration 0009 (the run upgrades it): no ledger
        spent = 0
    return max(limit - spent, 0)
