"""`platepipe run --dry-run`: what a run would send, how many calls and how long; no call,
and nothing written to the database."""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import islice

import click

from pipeline.capture import PathPattern
from pipeline.config import RunSettings
from pipeline.db import parse_url
from pipeline.errors import EXIT_OK
from pipeline.preflight import MAX_IMAGE_BYTES, in_daemon_thread
from pipeline.progress import format_duration
from pipeline.scanner import SCAN_BATCH_FILES, Filter, ScanStats, walk
from pipeline.store import Store

SENT_AGAIN = ("pending", "running")  # what a run sends of the items a job already has


@dataclass
class Plan:
    files: int = 0
    new: int = 0
    again: int = 0  # the job's items still pending, found by this scan or an earlier one
    finished: int = 0  # found, and done, failed or skipped already: not sent
    local_skips: int = 0  # new, but empty or over 5 MB: skipped without a call

    @property
    def calls(self) -> int:
        return self.new + self.again - self.local_skips


async def dry_run(settings: RunSettings) -> int:
    url = parse_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and not os.path.exists(url.database or ""):
        plan = await _plan(None, settings)  # no database yet: everything is new
    else:
        store = await Store.open(settings.db_url, migrate=False)
        try:
            plan = await _plan(store, settings)
            plan.again = await store.count_pending(settings.job)
        finally:
            await store.close()
    seconds = plan.calls / settings.rate_per_s
    click.echo(
        f"dry run of job {settings.job}: {plan.files} files found; {plan.new} new, "
        f"{plan.again} pending, {plan.finished} already finished, "
        f"{plan.local_skips} would be skipped without a call (empty or over 5 MB)"
    )
    click.echo(
        f"would make about {plan.calls} calls (plus retries): "
        f"{format_duration(seconds)} at {settings.rate_per_s:g} requests/s; nothing was sent"
    )
    return EXIT_OK


async def _plan(store: Store | None, settings: RunSettings) -> Plan:
    plan = Plan()
    stats = ScanStats()
    keep = Filter(settings.include, settings.exclude)
    files = walk(settings.roots, keep, stats, PathPattern.parse(settings.capture_pattern))
    while batch := await in_daemon_thread(lambda: list(islice(files, SCAN_BATCH_FILES))):
        known = await store.known_states(settings.job, [f.path for f in batch]) if store else {}
        for found in batch:
            plan.files += 1
            status = known.get(found.path)
            if status is None:
                plan.new += 1
                if found.size == 0 or found.size > MAX_IMAGE_BYTES:
                    plan.local_skips += 1
            elif status not in SENT_AGAIN:
                plan.finished += 1
    return plan
