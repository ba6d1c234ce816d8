"""The stages of one run, started, watched and shut down in one place.

    scanner ──> items table ──claimer──> ClaimQueue ──> workers ──> writer ──> items table
                                    (claim_batch)     (limiter, client)   (record_outcomes)
    side tasks: coordinator (heartbeat, rate share, halt), window (deadline), progress

`Stages.run` starts them all, then watches them until the claimer runs out of work or the run
stops; a stage that dies stops the run with its error, so a run that cannot store, enqueue or
keep its lease never ends in success. `_shutdown` is the graceful end, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any

from pipeline.budget import budget_for
from pipeline.capture import PathPattern
from pipeline.claimer import Claimer, ClaimQueue
from pipeline.client import NhnClient
from pipeline.concurrency import ConcurrencyLimit
from pipeline.config import RunSettings
from pipeline.coordinator import Coordinator, Registration, stop_at_end_of_window
from pipeline.dedupe import Dedupe
from pipeline.fitting import Fitter
from pipeline.pacing import Breaker, RateGovernor
from pipeline.progress import LIVE_REFRESH_S, LineProgress, LiveProgress, Snapshot
from pipeline.records import Outcome, WorkerKind
from pipeline.scanner import Filter, ScanStats, scan_into
from pipeline.stopping import RunStop
from pipeline.tally import CallTally
from pipeline.workers import PoolStats, RetryPolicy, WorkerPool
from pipeline.writer import Writer

log = logging.getLogger(__name__)


class Stages:
    def __init__(
        self,
        settings: RunSettings,
        registration: Registration,
        client: NhnClient,
        stop: RunStop,
    ) -> None:
        self.settings = settings
        self.store, self.job = registration.store, registration.job
        self.kind, self.lease = registration.kind, registration.lease
        self.stop = stop
        self.scan = ScanStats(finished=not settings.roots)
        self.committed: Counter[str] = Counter()  # this run's committed outcomes, by status
        self.tally = CallTally()
        self.queue = ClaimQueue(settings.concurrency or settings.max_concurrency)
        self.claimer = Claimer(self.store, self.job, self.lease, self.queue, stop.event, self.scan)
        self.writer = Writer(self.store, self.job, self.lease.token, self._on_committed)
        breaker = Breaker(settings.max_outage_s)
        governor = RateGovernor(settings.rate_per_s, stop.event)
        self.concurrency = ConcurrencyLimit(
            governor,
            pinned=settings.concurrency,
            max_concurrency=settings.max_concurrency,
            on_resize=self.queue.resize,
        )
        self.coordinator = Coordinator(
            settings, registration, governor, stop, self._follow_token, self.claimer.wake
        )
        self.coordinator.concurrency = self.concurrency
        self.pool = WorkerPool(
            client,
            governor,
            breaker,
            RetryPolicy(settings.max_attempts, settings.backoff_base_s, settings.backoff_cap_s),
            self.queue,
            self.writer.queue,
            stop.event,
            stop.request,
            settings.max_requests,
            writable=self.store.writable,
            lease=self.lease,
            fitter=Fitter(settings.fit),
            budget=budget_for(settings.daily_budget, self.store, self.lease, stop.request),
            dedupe=Dedupe(self.store) if settings.dedupe else None,
            concurrency=self.concurrency,
        )
        stop.on_stop(self.claimer.wake)
        stop.on_stop(breaker.abort)  # workers waiting out an outage put their items back
        self.workers: list[asyncio.Task[None]] = []
        self.side_tasks: list[asyncio.Task[None]] = []

    async def run(self) -> PoolStats:
        """Run every stage until the job has nothing left to do or the run stops."""
        with self.stop.on_signals(on_second=self._cancel_calls):
            writer = asyncio.create_task(self.writer.run(), name="writer")
            try:
                await self._start()  # a start that fails half-way is shut down all the same
                await watch(self.claimer.run(), [writer, *self.side_tasks])
            except BaseException:
                self.stop.event.set()  # a stage failed: no worker starts another call
                raise
            finally:
                await self._shutdown(writer)
        return self.pool.stats

    async def _start(self) -> None:
        """The workers, then the side tasks; the claimer starts last, under `watch`."""
        self.workers = [
            asyncio.create_task(self.pool.run(), name=f"worker-{n}")
            for n in range(self.concurrency.workers)
        ]
        self._start_side(self.coordinator.run(), "coordinator")
        self._start_side(stop_at_end_of_window(self.settings, self.stop), "window")
        settings = self.settings
        if not settings.quiet and (settings.live_progress or settings.progress_every_s > 0):
            # Counted once, before the scan adds to it; then kept in memory, since a count on
            # the single SQLite connection of a large job holds up claimer and writer.
            left = (await self.store.pending_state(self.job, self.lease.token)).left
            self._start_side(self._progress(left), "progress")
        if settings.roots:
            self._start_side(self._scan(), "scanner")

    def _start_side(self, stage: Coroutine[Any, Any, None], name: str) -> None:
        self.side_tasks.append(asyncio.create_task(stage, name=name))

    async def _shutdown(self, writer: asyncio.Task[None]) -> None:
        """The graceful end, in order, each step needing the one before it: drop unstarted
        items and give each worker its end; let the calls in flight end; flush the writer;
        then cancel the side tasks (the coordinator keeps the lease alive until the last
        answer is committed). Leaving the `Registration` then releases and unregisters."""
        self.queue.close(len(self.workers))  # unstarted items: pending again at release
        await finish_workers(self.workers, writer)  # their calls in flight end
        if not writer.done():
            await self.writer.queue.put(None)  # everything before it is committed
        await _cancel(self.side_tasks)
        await writer  # raises the writer's DatabaseError, if it had one

    def _cancel_calls(self) -> None:
        """A second signal: the calls in flight are abandoned (their items stay pending)."""
        for worker in self.workers:
            worker.cancel()

    def _on_committed(self, batch: Sequence[Outcome]) -> None:
        self.claimer.on_committed(len(batch))
        for outcome in batch:
            self.committed[outcome.status] += 1
            self.tally.add(outcome)

    def _follow_token(self, token: str) -> None:
        self.writer.worker_id = token  # registered again: results are written under the new id

    async def _scan(self) -> None:
        settings = self.settings
        keep = Filter(settings.include, settings.exclude)
        capture = PathPattern.parse(settings.capture_pattern)
        try:
            await scan_into(
                self.store,
                self.job,
                settings.roots,
                keep,
                self.scan,
                capture,
                self.claimer.wake,
                settings.min_age_s,
            )
        finally:
            self.scan.finished = True
            self.claimer.wake()
        log.info("scan finished: %d files", self.scan.files)

    async def _progress(self, left_at_start: int) -> None:
        """Report progress: a live panel on a terminal, else a log line every N seconds."""
        live = self.settings.live_progress
        every_s = LIVE_REFRESH_S if live else self.settings.progress_every_s
        stats = self.pool.stats
        last_calls, last_at = 0, time.monotonic()
        left = left_at_start
        with LiveProgress() if live else LineProgress() as reporter:
            while True:
                await asyncio.sleep(every_s)
                now = time.monotonic()
                rate = (stats.calls - last_calls) / (now - last_at)
                last_calls, last_at = stats.calls, now
                left = await self._left(left_at_start, left)
                reporter.show(self._snapshot(rate, left))

    async def _left(self, left_at_start: int, last: int) -> int:
        """What is left of the job: a `run` works alone and counts it in memory from the
        start; `work` shares the job, so it counts it again (cheap on the status index)."""
        c = self.committed
        if self.kind != WorkerKind.WORK:
            finished = c["done"] + c["failed"] + c["skipped"]
            return max(left_at_start + self.scan.queued - finished, 0)
        try:
            return (await self.store.pending_state(self.job, self.lease.token)).left
        except Exception as exc:  # a missed count is harmless; the next report tries again
            log.debug("counting what is left failed: %s", exc)
            return last

    def _snapshot(self, rate: float, left: int) -> Snapshot:
        c, stats = self.committed, self.pool.stats
        return Snapshot(
            scanned=self.scan.files if self.settings.roots else None,
            scan_finished=self.scan.finished,
            done=c["done"],
            failed=c["failed"],
            skipped=c["skipped"],
            retrying=stats.retries,
            calls=stats.calls,
            calls_per_s=rate,
            left=left,
            # `work`: the ETA at the rate of every live worker together
            job_calls_per_s=rate * self.coordinator.live_workers
            if self.kind == WorkerKind.WORK
            else None,
            concurrency=self.concurrency.limit,
            latency_ms=self.concurrency.latency_ms,
        )


async def watch(claimer: Coroutine[Any, Any, None], stages: Iterable[asyncio.Task[Any]]) -> None:
    """Run the claimer to its end; if another stage fails first, stop at once and raise its
    error. A stage that ends well (the scan, a window without limits) is let go."""
    claim_task = asyncio.create_task(claimer, name="claimer")
    watched = {claim_task, *stages}
    while not claim_task.done():
        done, watched = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t is not claim_task and _failed(t)]
        if failed:
            claim_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await claim_task
            raise failed[0].exception()  # type: ignore[misc]
    await claim_task


def _failed(task: asyncio.Task[Any]) -> bool:
    return not task.cancelled() and task.exception() is not None


async def finish_workers(workers: list[asyncio.Task[None]], writer: asyncio.Task[None]) -> None:
    """Let the workers end their calls; should the writer die meanwhile, workers blocked on
    its full queue would wait forever: cancel them (their items go back to pending)."""
    finished = asyncio.gather(*workers, return_exceptions=True)
    either: set[asyncio.Future[Any]] = {finished, writer}
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if not finished.done():
        if writer.done():
            for worker in workers:
                worker.cancel()
        await finished


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
