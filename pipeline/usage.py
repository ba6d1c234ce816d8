"""What a batch of outcomes adds to the `usage` ledger, and the local calendar day (pure).

`usage` counts, per local calendar day (YYYY-MM-DD) and job, the calls that reached the API,
the copies (a content recognized already: done with no call) and the fits (a picture over
5 MB re-encoded to be sent). `--daily-budget` counts against it; `platepipe usage` shows it.

The day is this host's local calendar day, as an operator's allowance runs: the time zone is
the process's (`TZ`), never the database's, which does not know it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from pipeline.records import Outcome, utcnow


@dataclass
class Counts:
    """One (day, job)'s additions to `usage`."""

    calls: int = 0
    copies: int = 0
    fits: int = 0


def local_day(at_utc: datetime | None = None) -> str:
    """The local calendar day (YYYY-MM-DD) of `at_utc`, a naive UTC time as the store keeps
    them (default: now)."""
    at = (at_utc or utcnow()).replace(tzinfo=UTC).astimezone()
    return at.date().isoformat()


def day_ends_at(day: str) -> datetime:
    """When the local calendar day `day` ends: the next local midnight, aware."""
    after = date.fromisoformat(day) + timedelta(days=1)
    midnight = datetime(after.year, after.month, after.day)
    return midnight.astimezone()  # a naive time is read as local


def first_day(days: int, today: str | None = None) -> str:
    """The first of the last `days` local calendar days, today included."""
    start = date.fromisoformat(today or local_day()) - timedelta(days=max(days, 1) - 1)
    return start.isoformat()


def usage_counts(outcomes: Iterable[Outcome], job_id: int) -> dict[tuple[str, int], Counts]:
    """Per (local day, job), what `outcomes` add to `usage`: one call for each that reached
    the API (as `jobs.calls` counts them), on the day its budget hold was taken, else the day
    it started, and one fit for each of those that sent a fitted picture; one copy, today,
    for each done from another item's recognition of the same content (no call).
    """
    counts: dict[tuple[str, int], Counts] = {}
    for outcome in outcomes:
        call = outcome.call
        if outcome.is_copy:
            counts.setdefault((local_day(), job_id), Counts()).copies += 1
        if call is None or not call.answer.reached:
            continue
        day = call.hold.day if call.hold is not None else local_day(call.started_at)
        added = counts.setdefault((day, job_id), Counts())
        added.calls += 1
        added.fits += outcome.fit is not None
    return {key: c for key, c in counts.items() if c.calls or c.copies or c.fits}


def holds_to_release(outcomes: Iterable[Outcome]) -> dict[tuple[str, str], int]:
    """Per (worker, day), the budget holds `outcomes` end: every held call, whether it
    reached the API (then `usage` counts it instead) or not (it is given back)."""
    released: dict[tuple[str, str], int] = {}
    for outcome in outcomes:
        hold = outcome.call.hold if outcome.call is not None else None
        if hold is not None:
            key = (hold.worker_id, hold.day)
            released[key] = released.get(key, 0) + 1
    return released


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One (day, job) of `usage`, as `platepipe usage` shows it."""

    day: str
    job: str
    calls: int
    copies: int
    fits: int


def _total(rows: Iterable[UsageRow]) -> Counts:
    total = Counts()
    for row in rows:
        total.calls += row.calls
        total.copies += row.copies
        total.fits += row.fits
    return total


def _by_day(rows: Iterable[UsageRow]) -> dict[str, list[UsageRow]]:
    days: dict[str, list[UsageRow]] = {}
    for row in rows:
        days.setdefault(row.day, []).append(row)
    return days


USAGE_HEADER = ("day", "job", "calls", "copies", "fits")


def format_usage(rows: list[UsageRow], days: int) -> str:
    """`platepipe usage`: a row per day and job, newest day first, each day's total under its
    jobs, and the total of the `days` days."""
    if not rows:
        return f"no calls, copies or fits in the last {days} days"
    table: list[tuple[str, ...]] = [USAGE_HEADER]
    for day, jobs in _by_day(rows).items():
        table += [(day, r.job, str(r.calls), str(r.copies), str(r.fits)) for r in jobs]
        day_total = _total(jobs)
        table.append((day, "(day total)", *_figures(day_total)))
    total = _total(rows)
    table.append(("total", f"last {days} days", *_figures(total)))
    widths = [max(len(line[i]) for line in table) for i in range(len(USAGE_HEADER))]
    return "\n".join(
        "  ".join(
            cell.rjust(widths[i]) if i >= 2 else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ).rstrip()
        for line in table
    )


def _figures(counts: Counts) -> tuple[str, str, str]:
    return str(counts.calls), str(counts.copies), str(counts.fits)


def usage_json(rows: list[UsageRow], days: int, first: str) -> dict[str, object]:
    """`platepipe usage --json`: the same figures, for scripts."""
    per_day = [{"day": day, **vars_of(_total(jobs))} for day, jobs in _by_day(rows).items()]
    return {
        "days": days,
        "first_day": first,
        "rows": [
            {"day": r.day, "job": r.job, "calls": r.calls, "copies": r.copies, "fits": r.fits}
            for r in rows
        ],
        "per_day": per_day,
        "total": vars_of(_total(rows)),
    }


def vars_of(counts: Counts) -> dict[str, int]:
    return {"calls": counts.calls, "copies": counts.copies, "fits": counts.fits}
