"""The claimer: keeps the workers' bounded queue fed from the items table.

It claims in batches of at least half the queue (one query per batch, not per item), and
between claims it waits on events, never on a clock: the queue having room, new work (a scan
batch, a commit that may end the job, a dead worker's items reclaimed), or a stop. Only while
everything left is waiting for a retry does it look again after a while.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

from pipeline.lease import Lease
from pipeline.records import ClaimedItem, Job, utcnow
from pipeline.scanner import ScanStats
from pipeline.store import Store

IDLE_POLL_S = 0.5  # how often an idle claimer looks again when waiting for retries or the scan
QUEUE_PER_WORKER = 2
MIN_QUEUE = 8


class ClaimQueue(asyncio.Queue[ClaimedItem | None]):
    """The bounded queue between the claimer and the workers (`None`: a worker's end).

    `room` is set while a claim of at least half the queue fits. `size` is what the claimer
    fills it to: `maxsize` for a pinned pool; with `--concurrency auto`, it follows the limit
    (`resize`), so leases and reads ahead stay proportional to what the rate needs.
    """

    def __init__(self, workers: int) -> None:
        super().__init__(maxsize=max(workers * QUEUE_PER_WORKER, MIN_QUEUE))
        self.size = self.maxsize
        self.room = asyncio.Event()
        self.room.set()

    @property
    def free(self) -> int:
        return max(self.size - self.qsize(), 0)

    def has_room(self) -> bool:
        return self.free >= max(self.size // 2, 1)

    def resize(self, workers: int) -> None:
        """Fill to what `workers` slots need (never past `maxsize`, which takes every
        worker's end at `close`); items already queued stay."""
        self.size = min(max(workers * QUEUE_PER_WORKER, MIN_QUEUE), self.maxsize)
        if self.has_room():
            self.room.set()
        else:
            self.room.clear()

    # Every get and put goes through these two hooks (asyncio.Queue's own subclasses use them).
    def _get(self) -> ClaimedItem | None:
        item = super()._get()
        if self.has_room():
            self.room.set()
        return item

    def _put(self, item: ClaimedItem | None) -> None:
        super()._put(item)
        if not self.has_room():
            self.room.clear()

    def close(self, workers: int) -> None:
        """Drop the items no worker started (still leased to this run: releasing the lease
        makes them pending again) and give each of `workers` its end."""
        while not self.empty():
            self.get_nowait()
        for _ in range(workers):
            self.put_nowait(None)


class Claimer:
    def __init__(
        self,
        store: Store,
        job: Job,
        lease: Lease,
        queue: ClaimQueue,
        stop: asyncio.Event,
        scan: ScanStats,
    ) -> None:
        self.store = store
        self.job = job
        self.lease = lease  # its token is this worker's id, which a new registration changes
        self.queue = queue
        self.stop = stop
        self.scan = scan  # the scan adds work until it is finished
        self.outstanding = 0  # claimed items whose outcome is not committed yet
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """There may be new work, or an end: look again now."""
        self._wake.set()

    def on_committed(self, count: int) -> None:
        self.outstanding -= count
        self._wake.set()

    async def run(self) -> None:
        """Keep the worker queue fed until the job has nothing left to do, or the run stops."""
        while not self.stop.is_set():
            if not self.queue.has_room():
                await _first(self.queue.room, self.stop)
                continue
            self._wake.clear()
            batch = await self.store.claim_batch(self.job, self.lease.token, self.queue.free)
            for item in batch:
                self.queue.put_nowait(item)
            self.outstanding += len(batch)
            if batch:
                continue
            if self.scan.finished and self.outstanding == 0:
                if await self._job_finished():
                    return
            else:
                await _wait(self._wake, IDLE_POLL_S)

    async def _job_finished(self) -> bool:
        """Nothing of ours is in flight: whether the job is done; if not, wait for its next
        item due (or a wake)."""
        left = await self.store.pending_state(self.job, self.lease.token)
        if left.left == 0:
            return True
        if left.running_mine:
            # Leased to us but never received: a claim whose answer a dropped database
            # connection lost. Nothing of ours is in flight, so they go back to pending.
            await self.store.release(self.job, self.lease.token)
            return False
        await _wait(self._wake, _seconds_until(left.next_due))
        return False


def _seconds_until(when: datetime | None) -> float:
    if when is None:
        return IDLE_POLL_S
    return min(max((when - utcnow()).total_seconds(), 0.01), IDLE_POLL_S)


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)


async def _first(*events: asyncio.Event) -> None:
    """Wait until one of `events` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
