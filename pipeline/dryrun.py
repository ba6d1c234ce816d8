"""`platepipe run --dry-run`: the calls a run would make, exactly (retries aside), and how
long they take at the rate; no call, and nothing written to the database.

Exact because it decides as the run does, with the run's own parts: the scanner's walk (its
roots each walked once, `--min-age`), the store's rule for a file that changed since it was
done (`requeues`), and the workers' pre-flight check of every file to be sent
(`read_checked`: empty, too large, not an image, unreadable, missing cost no call; with
fitting on, a picture over 5 MB is decoded to tell one that fits from one skipped), and the
content look-up of `dedupe.py` (`ContentPlan`: recognized already, or planned once already).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import click

from pipeline.budget import left_today
from pipeline.capture import PathPattern
from pipeline.config import JobSettings
from pipeline.db import parse_url
from pipeline.dedupe import ContentPlan
from pipeline.errors import EXIT_OK
from pipeline.fitting import Fitter
from pipeline.progress import format_duration
from pipeline.records import Checked
from pipeline.scanner import SCAN_BATCH_FILES, Filter, ScanStats, batches, walk
from pipeline.store import Store, requeues

CHECKS_AT_ONCE = 16  # files read at a time for the pre-flight check, as a run's workers do


@dataclass
class Plan:
    files: int = 0
    new: int = 0
    changed: int = 0  # done, failed or skipped, but modified since: queued again
    pending: int = 0  # the job's items still pending (or left running), whoever found them
    finished: int = 0  # found, and done, failed or skipped already, unchanged: not sent
    skips: Counter[str] = field(default_factory=Counter)  # of those to send: no call, why
    too_recent: int = 0
    copies: ContentPlan = field(default_factory=ContentPlan)  # of those to send: no call

    @property
    def to_send(self) -> int:
        return self.new + self.changed + self.pending

    @property
    def calls(self) -> int:
        return self.to_send - sum(self.skips.values()) - self.copies.count


async def dry_run(settings: JobSettings) -> int:
    url = parse_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and not os.path.exists(url.database or ""):
        plan = await _plan(None, settings)  # no database yet: everything is new
        budget_left = await left_today(None, settings.daily_budget)
    else:
        async with Store.connect(settings.db_url, migrate=False) as store:
            plan = await _plan(store, settings)
            budget_left = await left_today(store, settings.daily_budget)
    calls = plan.calls
    if settings.max_requests is not None:
        calls = min(calls, settings.max_requests)
    capped = " (--max-requests)" if calls < plan.calls else ""
    if budget_left is not None and budget_left < calls:  # what today's --daily-budget allows
        calls, capped = budget_left, " (--daily-budget: what is left of today's)"
    skips = ", ".join(f"{reason} {n}" for reason, n in sorted(plan.skips.items()))
    click.echo(
        f"dry run of job {settings.job}: {plan.files} files found; {plan.new} new, "
        f"{plan.changed} changed, {plan.pending} pending, {plan.finished} already finished, "
        f"{sum(plan.skips.values())} would be skipped without a call"
        + (f" ({skips})" if skips else "")
        + (
            f", {plan.copies.count} copies of content recognized already"
            if plan.copies.count
            else ""
        )
    )
    if plan.too_recent:
        click.echo(f"{plan.too_recent} files modified within --min-age left for the next run")
    click.echo(
        f"would make {calls} calls{capped}, plus retries: "
        f"{format_duration(calls / settings.rate_per_s)} at {settings.rate_per_s:g} "
        "requests/s; nothing was sent"
    )
    return EXIT_OK


async def _plan(store: Store | None, settings: JobSettings) -> Plan:
    plan = Plan(copies=ContentPlan(store if settings.dedupe else None, settings.dedupe))
    stats = ScanStats()
    keep = Filter(settings.include, settings.exclude)
    capture = PathPattern.parse(settings.capture_pattern)
    files = walk(settings.roots, keep, stats, capture, settings.min_age_s)
    fitter = Fitter(settings.fit)  # with fitting on, a picture over 5 MB is a call if it fits
    async for batch in batches(files):
        known = await store.known_files(settings.job, [f.path for f in batch]) if store else {}
        to_check = []
        for found in batch:
            plan.files += 1
            seen = known.get(found.path)
            if seen is None:
                plan.new += 1
            elif seen.status in ("pending", "running"):
                continue  # counted, and checked, with the job's other unfinished items
            elif requeues(seen, found):
                plan.changed += 1
            else:
                plan.finished += 1
                continue
            to_check.append(found.raw_path or found.path)
        await _check(to_check, plan, fitter)
    plan.too_recent = stats.too_recent
    if store is not None:
        async for chunk in _chunks(store.unfinished_files(settings.job), SCAN_BATCH_FILES):
            plan.pending += len(chunk)
            await _check([raw or path for path, raw in chunk], plan, fitter)
    return plan


async def _check(paths: Iterable[str | bytes], plan: Plan, fitter: Fitter) -> None:
    """Count the files the workers' pre-flight check would skip without a call, and the
    copies of content that costs none."""
    paths = list(paths)
    for start in range(0, len(paths), CHECKS_AT_ONCE):
        digests = []
        for checked in await asyncio.gather(
            *(fitter.preflight(p) for p in paths[start : start + CHECKS_AT_ONCE])
        ):
            if isinstance(checked, Checked):
                digests.append(checked.sha256)
            else:
                plan.skips[checked[0]] += 1
        await plan.copies.add(digests)


async def _chunks(rows: AsyncIterator[tuple], size: int) -> AsyncIterator[list[tuple]]:
    chunk: list[tuple] = []
    async for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
