"""One run of a job: scanner, claimer, worker pool, writer and heartbeat, wired together.

    scan ──> items table ──claimer──> bounded queue ──> workers ──> writer ──> items table
                                 (claim_batch)        (limiter, client)   (record_outcomes)

The run ends when the job has nothing left to do, or early on a signal or a fatal API answer:
then claiming stops, in-flight calls finish, the writer flushes, and unstarted items go back to
pending. The exit code follows SPEC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.capture import PathPattern
from pipeline.client import NhnClient
from pipeline.config import RunSettings, ScanSettings
from pipeline.errors import EXIT_FAILED_ITEMS, EXIT_FATAL, EXIT_OK, EXIT_STOPPED, JobBusyError
from pipeline.lease import Lease
from pipeline.pacing import Breaker, RateGovernor
from pipeline.progress import LIVE_REFRESH_S, LineProgress, LiveProgress, Snapshot
from pipeline.records import CallResult, ClaimedItem, Job, JobSummary, Outcome, WorkerKind, utcnow
from pipeline.scanner import Filter, ScanStats, scan_into
from pipeline.store import Store
from pipeline.workers import PoolStats, RetryPolicy, WorkerPool
from pipeline.writer import Writer

log = logging.getLogger(__name__)

COORDINATE_EVERY_S = 1.0  # heartbeat and rate share; peers are dead after the heartbeat timeout
IDLE_POLL_S = 0.5  # how often an idle claimer looks again when waiting for retries or the scan
QUEUE_PER_WORKER = 2
REFILL_POLL_S = 0.01


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


@dataclass
class CallTally:
    """This run's calls that went wrong for a while: transient errors by code, and refusals
    for the call limit with what the API let through in the seconds it refused some."""

    transient: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    _admitted: Counter[int] = field(default_factory=Counter)  # epoch second -> calls let in
    _refused: set[int] = field(default_factory=set)  # seconds with a refusal

    def add(self, outcome: Outcome) -> None:
        call = outcome.call
        if call is None:
            return
        second = int(call.started_at.timestamp())
        if call.result is CallResult.THROTTLED:
            self.throttled += 1
            self._refused.add(second)
            return
        self._admitted[second] += 1
        if call.answer.verdict.retried:
            self.transient[call.answer.code] += 1

    @property
    def allowed_per_s(self) -> int | None:
        """Calls the API took in the busiest second in which it also refused some: its limit,
        as far as this run could see it."""
        if not self._refused:
            return None
        return max((self._admitted[s] for s in self._refused), default=0)


@dataclass
class _Run:
    settings: RunSettings
    store: Store
    job: Job
    worker_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    scan: ScanStats = field(default_factory=ScanStats)
    outstanding: int = 0  # claimed items whose outcome is not committed yet
    committed: dict[str, int] = field(default_factory=dict)
    breaker: Breaker = field(default_factory=Breaker)
    stopped_by: str | None = None
    message: str | None = None  # why the run stopped early, as one line for the operator
    peers_at_start: int = 0  # other live workers when this one registered
    live_workers: int = 1  # on the job, this one included, as last seen by the coordinator
    kind: WorkerKind = WorkerKind.RUN
    halting: asyncio.Event = field(default_factory=asyncio.Event)  # fatal here: halt the job
    tally: CallTally = field(default_factory=CallTally)
    lease: Lease | None = None  # set once registered
    writer: Writer | None = None

    def request_stop(self, reason: str, message: str | None = None, *, spread: bool = True) -> None:
        """Stop claiming; in-flight calls finish and their answers are committed. A fatal
        stop is `spread` to the job's other workers, through the coordinator."""
        if self.stopped_by is None:
            self.stopped_by, self.message = reason, message
            if reason == "fatal" and spread:
                self.halting.set()
            elif reason != "fatal":
                log.warning("stopping (%s): finishing the calls in flight", message or reason)
        self.stop.set()
        self.wake.set()
        self.breaker.abort()

    def on_committed(self, batch: Sequence[Outcome]) -> None:
        self.outstanding -= len(batch)
        for outcome in batch:
            self.committed[outcome.status] = self.committed.get(outcome.status, 0) + 1
            self.tally.add(outcome)
        self.wake.set()


async def run_job(
    settings: RunSettings, store: Store, *, kind: WorkerKind = WorkerKind.RUN
) -> RunReport:
    """Run the job in `settings` to its end (or an early stop) and report what happened.

    `kind` "run" works on the job alone; "work" shares it with other `work` processes,
    anywhere, through the database: the rate is split between the live ones.
    """
    started = time.monotonic()
    store.ride_out_s = settings.max_db_outage_s  # connected: from now on, wait out restarts
    job = await store.ensure_job(settings.job, create=bool(settings.roots))
    run = _Run(settings, store, job, breaker=Breaker(settings.max_outage_s), kind=kind)
    run.peers_at_start = await store.register_worker(job, run.worker_id, kind=kind)
    run.lease = Lease(run.worker_id, store.heartbeat_timeout_s)
    try:
        reclaimed = await store.reclaim_orphans(job)
        if reclaimed:
            log.info("%d items left running by an earlier run are pending again", reclaimed)
        pool_stats = await _run_stages(run)
        if run.halting.is_set():  # a fatal answer here: the job's other workers stop too
            await store.halt(job, run.message or "halted")
    finally:
        await store.release(job, run.worker_id)
        await store.unregister_worker(run.worker_id)
    (summary,) = await store.summaries(job.name)
    elapsed_s = time.monotonic() - started
    return RunReport(
        summary, run.scan, pool_stats, elapsed_s, run.stopped_by, run.message, run.tally
    )


async def scan_job(settings: ScanSettings, store: Store) -> ScanStats:
    """`platepipe scan`: enqueue the roots' images into the job (created if new), no calls."""
    store.ride_out_s = settings.max_db_outage_s
    job = await store.ensure_job(settings.job, create=True)
    stats = ScanStats()
    keep = Filter(settings.include, settings.exclude)
    capture = PathPattern.parse(settings.capture_pattern)
    await scan_into(store, job, settings.roots, keep, stats, capture, min_age_s=settings.min_age_s)
    return stats


async def _run_stages(run: _Run) -> PoolStats:
    settings = run.settings
    claimed: asyncio.Queue[ClaimedItem | None] = asyncio.Queue(
        maxsize=max(settings.concurrency * QUEUE_PER_WORKER, 8)
    )
    writer = Writer(run.store, run.job, run.worker_id, run.on_committed)
    run.writer = writer
    policy = RetryPolicy(settings.max_attempts, settings.backoff_base_s, settings.backoff_cap_s)
    workers: list[asyncio.Task] = []
    async with NhnClient(settings.api, connections=settings.concurrency) as client:
        governor = RateGovernor(settings.rate_per_s, run.stop)
        if run.peers_at_start:
            # Peers are sending at their old shares until their next look: take this
            # process's share, and hold back until they have made room for it.
            governor.set_share(settings.rate_per_s / (run.peers_at_start + 1))
            governor.hold(COORDINATE_EVERY_S * 1.5)
        pool = WorkerPool(
            client,
            governor,
            run.breaker,
            policy,
            claimed,
            writer.queue,
            run.stop,
            run.request_stop,
            settings.max_requests,
            writable=run.store.writable,
            lease=run.lease,
        )
        with _signals_stop(run, on_second=lambda: [w.cancel() for w in workers]):
            writer_task = asyncio.create_task(writer.run(), name="writer")
            workers[:] = [
                asyncio.create_task(pool.run(), name=f"worker-{n}")
                for n in range(settings.concurrency)
            ]
            side_tasks = [
                asyncio.create_task(_coordinate(run, governor), name="coordinator"),
                asyncio.create_task(_stop_at_end_of_window(run), name="window"),
            ]
            if not settings.quiet and (settings.live_progress or settings.progress_every_s > 0):
                # Counted once, before the scan adds to it; then kept in memory, since a count
                # on the single SQLite connection of a large job holds up claimer and writer.
                left = (await run.store.pending_state(run.job, run.worker_id)).left
                progress = _progress(run, pool.stats, left)
                side_tasks.append(asyncio.create_task(progress, name="progress"))
            critical = [writer_task]  # a stage whose death must end the run with its error
            if settings.roots:
                critical.append(asyncio.create_task(_scan(run), name="scanner"))
            else:
                run.scan.finished = True
            try:
                await _watch(_claim(run, claimed), critical)
            except BaseException:
                run.stop.set()  # a stage failed: no worker starts another call
                raise
            finally:
                # Items not started stay leased to this run; `release` makes them pending.
                while not claimed.empty():
                    claimed.get_nowait()
                for _ in workers:
                    claimed.put_nowait(None)
                await _finish_workers(workers, writer_task)
                if not writer_task.done():
                    await writer.queue.put(None)
                for task in side_tasks + critical[1:]:
                    task.cancel()
                await asyncio.gather(*side_tasks, *critical[1:], return_exceptions=True)
                await writer_task  # raises the writer's DatabaseError, if it had one
    return pool.stats


async def _watch(claimer: Coroutine[Any, Any, None], critical: list[asyncio.Task]) -> None:
    """Run the claimer to its end; if a critical stage (writer, scanner) fails first, stop at
    once and raise its error, so a run that cannot store or enqueue never ends in success."""
    claim_task = asyncio.create_task(claimer, name="claimer")
    watched = {claim_task, *critical}
    while not claim_task.done():
        done, watched = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t is not claim_task and t.exception() is not None]
        if failed:
            claim_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await claim_task
            raise failed[0].exception()  # type: ignore[misc]
    await claim_task


async def _finish_workers(workers: list[asyncio.Task], writer_task: asyncio.Task) -> None:
    """Let the workers end their calls; should the writer die meanwhile, workers blocked on
    its full queue would wait forever: cancel them (their items go back to pending)."""
    finished = asyncio.gather(*workers, return_exceptions=True)
    await asyncio.wait({finished, writer_task}, return_when=asyncio.FIRST_COMPLETED)
    if not finished.done():
        if writer_task.done():
            for worker in workers:
                worker.cancel()
        await finished


async def _claim(run: _Run, claimed: asyncio.Queue[ClaimedItem | None]) -> None:
    """Keep the worker queue fed from the database until the job has nothing left to do."""
    while not run.stop.is_set():
        free = claimed.maxsize - claimed.qsize()
        if free < claimed.maxsize // 2:
            # Claim in batches of at least half the queue: one query per batch, not per item.
            await asyncio.sleep(REFILL_POLL_S)
            continue
        run.wake.clear()
        batch = await run.store.claim_batch(run.job, run.worker_id, free)
        for item in batch:
            claimed.put_nowait(item)
        run.outstanding += len(batch)
        if batch:
            continue
        if run.scan.finished and run.outstanding == 0:
            left = await run.store.pending_state(run.job, run.worker_id)
            if left.left == 0:
                return
            if left.running_mine:
                # Leased to us but never received: a claim whose answer a dropped database
                # connection lost. Nothing of ours is in flight, so they go back to pending.
                await run.store.release(run.job, run.worker_id)
                continue
            await _wait(run.wake, _seconds_until(left.next_due))
        else:
            await _wait(run.wake, IDLE_POLL_S)


def _seconds_until(when: datetime | None) -> float:
    if when is None:
        return IDLE_POLL_S
    return min(max((when - utcnow()).total_seconds(), 0.01), IDLE_POLL_S)


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)


async def _scan(run: _Run) -> None:
    keep = Filter(run.settings.include, run.settings.exclude)
    capture = PathPattern.parse(run.settings.capture_pattern)
    try:
        await scan_into(
            run.store,
            run.job,
            run.settings.roots,
            keep,
            run.scan,
            capture,
            run.wake.set,
            run.settings.min_age_s,
        )
    finally:
        run.scan.finished = True
        run.wake.set()
    log.info("scan finished: %d files", run.scan.files)


async def _stop_at_end_of_window(run: _Run) -> None:
    """--deadline / --max-duration: stop as a signal would, with items left pending."""
    limits_s = []
    if run.settings.deadline is not None:
        limits_s.append((run.settings.deadline - datetime.now()).total_seconds())
    if run.settings.max_duration_s is not None:
        limits_s.append(run.settings.max_duration_s)
    if limits_s:
        await asyncio.sleep(max(min(limits_s), 0))
        run.request_stop("deadline", "the run's time window is over")


async def _coordinate(run: _Run, governor: RateGovernor) -> None:
    """Keep in step with the job's other workers, every few seconds: heartbeat, the rate
    share, leases of dead workers, and a job-wide halt in either direction."""
    while True:
        await asyncio.sleep(COORDINATE_EVERY_S)
        asked_at = time.monotonic()
        try:
            seen = await run.store.coordinate(run.job, run.worker_id, governor.share_per_s)
            if seen.lost:
                await _register_again(run, governor, asked_at)
                continue
        except Exception as exc:  # a missed look is harmless; the next one may get through
            log.warning("coordination with the job's other workers failed: %s", exc)
            continue
        if run.lease is not None:
            run.lease.confirm(asked_at)
        governor.set_share(run.settings.rate_per_s / seen.live)
        run.live_workers = seen.live
        if seen.reclaimed:
            log.info("%d items of a dead worker are pending again", seen.reclaimed)
            run.wake.set()
        if seen.halted:
            run.request_stop("fatal", seen.halted, spread=False)


async def _register_again(run: _Run, governor: RateGovernor, asked_at: float) -> None:
    """This worker was silent past the heartbeat timeout (a pause, a partition) and taken for
    dead: its items are someone else's now. Drop them unsent and join again under a new token;
    a `run` whose place another `run` took stops instead."""
    token = str(uuid.uuid4())
    log.warning(
        "this worker was silent past the heartbeat timeout and taken for dead: "
        "dropping the items it held and registering again"
    )
    try:
        peers = await run.store.register_worker(run.job, token, kind=run.kind)
        # As at the start: the others went up to bigger shares meanwhile; wait for room.
        governor.set_share(run.settings.rate_per_s / (peers + 1))
        governor.hold(COORDINATE_EVERY_S * 1.5)
    except JobBusyError as exc:
        run.request_stop("taken over", str(exc))
        token = ""  # no registration: nothing held may be sent
    run.worker_id = token
    if run.writer is not None:
        run.writer.worker_id = token
    assert run.lease is not None
    run.lease.replace(token, asked_at)
    run.wake.set()


async def _progress(run: _Run, stats: PoolStats, left_at_start: int) -> None:
    """Report progress: a live panel on a terminal, else a log line every N seconds.

    What is left is the job's: a `run` works alone and counts it in memory from the start;
    `work` shares the job, so it counts it again at each report (cheap on the status index)
    and estimates the ETA at the rate of every live worker together.
    """
    live = run.settings.live_progress
    every_s = LIVE_REFRESH_S if live else run.settings.progress_every_s
    last_calls, last_at = 0, time.monotonic()
    left: int | None = left_at_start
    with LiveProgress() if live else LineProgress() as reporter:
        while True:
            await asyncio.sleep(every_s)
            now = time.monotonic()
            rate = (stats.calls - last_calls) / (now - last_at)
            last_calls, last_at = stats.calls, now
            c = run.committed
            job_rate = None
            if run.kind == WorkerKind.WORK:
                left = await _job_left(run, left)
                job_rate = rate * run.live_workers
            else:
                finished = c.get("done", 0) + c.get("failed", 0) + c.get("skipped", 0)
                left = max(left_at_start + run.scan.queued - finished, 0)
            reporter.show(
                Snapshot(
                    scanned=run.scan.files if run.settings.roots else None,
                    scan_finished=run.scan.finished,
                    done=c.get("done", 0),
                    failed=c.get("failed", 0),
                    skipped=c.get("skipped", 0),
                    retrying=stats.retries,
                    calls=stats.calls,
                    calls_per_s=rate,
                    left=left,
                    job_calls_per_s=job_rate,
                )
            )


async def _job_left(run: _Run, last: int | None) -> int | None:
    try:
        return (await run.store.pending_state(run.job, run.worker_id)).left
    except Exception as exc:  # a missed count is harmless; the next report tries again
        log.debug("counting what is left failed: %s", exc)
        return last


@contextlib.contextmanager
def _signals_stop(run: _Run, on_second: Callable[[], object]):
    """SIGINT/SIGTERM stop the run gracefully; a second one cancels in-flight calls too.

    Either way the writer still commits every answer it has, and unfinished items go back to
    pending, so a hurried stop is as consistent as a patient one; it only wastes those calls.
    """
    loop = asyncio.get_running_loop()
    installed = []

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if run.stop.is_set():  # stopping already (a signal, a deadline, ...): hurry up
            log.warning("%s again: cancelling in-flight calls", name)
            on_second()
            return
        log.warning("%s: stopping after in-flight calls (again to stop at once)", name)
        run.request_stop(name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):  # not the main thread: no signals here
            pass
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
