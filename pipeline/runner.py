"""One run of a job, from registration to summary; `stages.py` wires the stages themselves.

    scan ──> items table ──claimer──> bounded queue ──> workers ──> writer ──> items table

The run ends when the job has nothing left to do, or early on a signal or a fatal API answer:
then claiming stops, in-flight calls finish, the writer flushes, and unstarted items go back to
pending. The exit code follows SPEC.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.budget import spend_today
from pipeline.capture import PathPattern
from pipeline.client import NhnClient
from pipeline.config import RunSettings, ScanSettings
from pipeline.coordinator import Registration
from pipeline.errors import EXIT_FAILED_ITEMS, EXIT_FATAL, EXIT_OK, EXIT_STOPPED
from pipeline.records import JobSummary, WorkerKind
from pipeline.scanner import Filter, ScanStats, scan_into
from pipeline.stages import Stages
from pipeline.stopping import RunStop
from pipeline.store import Store
from pipeline.tally import CallTally
from pipeline.workers import PoolStats

__all__ = ["CallTally", "RunReport", "run_job", "scan_job"]


@dataclass
class RunReport:
    """What a run did, for the summary and the exit code."""

    job: JobSummary
    scan: ScanStats
    pool: PoolStats
    elapsed_s: float
    stopped_by: str | None = None  # SIGTERM, deadline, fatal, ...; None: the job ran out of work
    message: str | None = None  # why it stopped, one line
    calls: CallTally | None = None  # this run's transient errors and throttling
    budget: str | None = None  # under --daily-budget, the day's spend (one line)

    @property
    def fatal(self) -> str | None:
        return self.message if self.stopped_by == "fatal" else None

    @property
    def exit_code(self) -> int:
        if self.fatal:
            return EXIT_FATAL
        counts = self.job.counts
        if counts["pending"] or counts["running"]:
            return EXIT_STOPPED  # stopped early, or another process still works on it
        if counts["failed"] or self.scan.unreadable_dirs:
            # A folder that could not be listed hides images nobody sent: as much for the
            # operator to fix (permissions, a path too long) as a failed item.
            return EXIT_FAILED_ITEMS
        return EXIT_OK


async def run_job(
    settings: RunSettings, store: Store, *, kind: WorkerKind = WorkerKind.RUN
) -> RunReport:
    """Run the job in `settings` to its end (or an early stop) and report what happened.

    `kind` "run" works on the job alone; "work" shares it with other `work` processes,
    anywhere, through the database: the rate is split between the live ones.
    """
    started = time.monotonic()
    job = await store.ensure_job(settings.job, create=bool(settings.roots))
    stop = RunStop()
    # Leaving the registration releases what this worker holds and unregisters it.
    async with Registration(store, job, kind) as registration:
        await registration.reclaim_orphans()
        connections = settings.concurrency or settings.max_concurrency
        async with NhnClient(settings.api, connections=connections) as client:
            stages = Stages(settings, registration, client, stop)
            pool_stats = await stages.run()
        if stop.halting:  # a fatal answer here: the job's other workers stop too
            await store.halt(job, stop.message or "halted")
    (summary,) = await store.summaries(job.name)
    elapsed_s = time.monotonic() - started
    budget = await spend_today(store, settings.daily_budget)
    return RunReport(
        summary, stages.scan, pool_stats, elapsed_s, stop.reason, stop.message, stages.tally,
        budget,
    )  # fmt: skip


async def scan_job(settings: ScanSettings, store: Store) -> ScanStats:
    """`platepipe scan`: enqueue the roots' images into the job (created if new), no calls."""
    job = await store.ensure_job(settings.job, create=True)
    stats = ScanStats()
    keep = Filter(settings.include, settings.exclude)
    capture = PathPattern.parse(settings.capture_pattern)
    await scan_into(store, job, settings.roots, keep, stats, capture, min_age_s=settings.min_age_s)
    return stats
