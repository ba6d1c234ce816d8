"""This worker among the job's others: its registration, and the heartbeat that keeps it.

`Registration` is the worker's place on the job, from `register_worker` to `unregister_worker`;
leaving it releases whatever the worker still holds. `Coordinator` is the side task that keeps
in step with the other workers every second: heartbeat (which extends the lease), the rate
share, leases of dead workers, and a job-wide halt in either direction.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from types import TracebackType

from pipeline.concurrency import ConcurrencyLimit
from pipeline.config import RunSettings
from pipeline.errors import JobBusyError
from pipeline.lease import Lease
from pipeline.pacing import RateGovernor
from pipeline.records import Job, WorkerKind
from pipeline.stopping import RunStop
from pipeline.store import Store

log = logging.getLogger(__name__)

COORDINATE_EVERY_S = 1.0  # heartbeat and rate share; peers are dead after the heartbeat timeout


class Registration:
    """`async with Registration(store, job, kind) as registration:` this worker on the job.

    On the way out, the items it still holds go back to pending and it leaves the registry.
    """

    def __init__(self, store: Store, job: Job, kind: WorkerKind) -> None:
        self.store = store
        self.job = job
        self.kind = kind
        self.lease = Lease(str(uuid.uuid4()), store.heartbeat_timeout_s)
        self.peers_at_start = 0  # other live workers when this one registered

    async def __aenter__(self) -> Registration:
        token = self.lease.token
        self.peers_at_start = await self.store.register_worker(self.job, token, kind=self.kind)
        # The lease runs from the registration's answer, as the store's heartbeat will.
        self.lease.replace(token, time.monotonic())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.store.release(self.job, self.lease.token)
        await self.store.unregister_worker(self.lease.token)

    async def reclaim_orphans(self) -> None:
        reclaimed = await self.store.reclaim_orphans(self.job)
        if reclaimed:
            log.info("%d items left running by an earlier run are pending again", reclaimed)


class Coordinator:
    def __init__(
        self,
        settings: RunSettings,
        registration: Registration,
        governor: RateGovernor,
        stop: RunStop,
        on_new_token: Callable[[str], object],
        on_new_work: Callable[[], object],
    ) -> None:
        self.store = registration.store
        self.job = registration.job
        self.kind = registration.kind
        self.lease = registration.lease
        self.rate_per_s = settings.rate_per_s
        self.governor = governor
        self.stop = stop
        self.on_new_token = on_new_token  # whoever writes under this worker's id
        self.on_new_work = on_new_work
        self.live_workers = 1  # on the job, this one included, as last seen
        self.concurrency: ConcurrencyLimit | None = None  # shown at each heartbeat
        if registration.peers_at_start:
            self._join(registration.peers_at_start)

    def _join(self, peers: int) -> None:
        """Peers are sending at their old shares until their next look: take this process's
        share, and hold back until they have made room for it."""
        self.governor.set_share(self.rate_per_s / (peers + 1))
        self.governor.hold(COORDINATE_EVERY_S * 1.5)

    async def run(self) -> None:
        """Keep in step with the job's other workers, every second, until cancelled."""
        while True:
            await asyncio.sleep(COORDINATE_EVERY_S)
            asked_at = time.monotonic()
            try:
                seen = await self.store.coordinate(
                    self.job, self.lease.token, self.governor.share_per_s, *self._gauges()
                )
                if seen.lost:
                    await self._register_again(asked_at)
                    continue
            except Exception as exc:  # a missed look is harmless; the next one may get through
                log.warning("coordination with the job's other workers failed: %s", exc)
                continue
            self.lease.confirm(asked_at)
            self.governor.set_share(self.rate_per_s / seen.live)
            self.live_workers = seen.live
            if seen.reclaimed:
                log.info("%d items of a dead worker are pending again", seen.reclaimed)
                self.on_new_work()
            if seen.halted:
                self.stop.request("fatal", seen.halted, spread=False)

    def _gauges(self) -> tuple[int | None, float | None]:
        """Calls in flight allowed now and the latency measured, for `status`."""
        if self.concurrency is None:
            return None, None
        return self.concurrency.limit, self.concurrency.latency_ms

    async def _register_again(self, asked_at: float) -> None:
        """This worker was silent past the heartbeat timeout (a pause, a partition) and taken
        for dead: its items are someone else's now. Drop them unsent and join again under a
        new token; a `run` whose place another `run` took stops instead."""
        token = str(uuid.uuid4())
        log.warning(
            "this worker was silent past the heartbeat timeout and taken for dead: "
            "dropping the items it held and registering again"
        )
        try:
            peers = await self.store.register_worker(self.job, token, kind=self.kind)
            self._join(peers)  # as at the start: the others went up to bigger shares meanwhile
        except JobBusyError as exc:
            self.stop.request("taken over", str(exc))
            token = ""  # no registration: nothing held may be sent
        self.lease.replace(token, asked_at)
        self.on_new_token(token)
        self.on_new_work()


async def stop_at_end_of_window(settings: RunSettings, stop: RunStop) -> None:
    """--deadline / --max-duration: stop as a signal would, with items left pending."""
    limits_s = []
    if settings.deadline is not None:
        limits_s.append((settings.deadline - datetime.now()).total_seconds())
    if settings.max_duration_s is not None:
        limits_s.append(settings.max_duration_s)
    if limits_s:
        await asyncio.sleep(max(min(limits_s), 0))
        stop.request("deadline", "the run's time window is over")
