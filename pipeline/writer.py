"""The writer: one task that commits outcomes in batches, each batch one transaction.

Batches form by count or by a short linger after the first outcome arrives, so results wait
milliseconds, not seconds, between the API's answer and the commit that makes them safe.
The store retries a commit that a restarting PostgreSQL or a busy SQLite interrupted; the batch
is never half-written, because it is one transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

from pipeline.errors import DatabaseError
from pipeline.records import CallResult, ItemStatus, Job, Outcome
from pipeline.store import Store

log = logging.getLogger(__name__)

WRITER_BATCH_OUTCOMES = 200
WRITER_LINGER_S = 0.05


class Writer:
    def __init__(
        self,
        store: Store,
        job: Job,
        worker_id: str,
        on_committed: Callable[[Sequence[Outcome]], None],
        *,
        batch_size: int = WRITER_BATCH_OUTCOMES,
        linger_s: float = WRITER_LINGER_S,
    ) -> None:
        self.store = store
        self.job = job
        self.worker_id = worker_id
        self.on_committed = on_committed
        self.batch_size = batch_size
        self.linger_s = linger_s
        # Bounded: when the database falls behind, workers wait instead of piling up results.
        self.queue: asyncio.Queue[Outcome | None] = asyncio.Queue(maxsize=batch_size * 2)

    async def run(self) -> None:
        """Commit batches until `None` arrives; everything put before it is committed."""
        closing = False
        while not closing:
            first = await self.queue.get()
            if first is None:
                break
            batch = [first]
            closing = await self._fill(batch)
            await self._commit(batch)

    async def _fill(self, batch: list[Outcome]) -> bool:
        """Add what arrives within the linger time; True when the closing `None` was seen."""
        deadline = time.monotonic() + self.linger_s
        while len(batch) < self.batch_size:
            try:
                outcome = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                try:
                    outcome = await asyncio.wait_for(self.queue.get(), remaining)
                except TimeoutError:
                    return False
            if outcome is None:
                return True
            batch.append(outcome)
        return False

    async def _commit(self, batch: Sequence[Outcome]) -> None:
        try:
            await self._record(batch)  # retried by the store through restarts
        except Exception as exc:
            if _transient(exc):
                raise  # the database stayed away past the ride-out: the run stops
            # Something in the batch cannot be stored (an answer too odd for its column,
            # say). Store the rest one by one rather than lose the whole batch.
            log.warning("storing %d results one by one: %s", len(batch), _one_line(exc))
            batch = [await self._commit_alone(outcome) for outcome in batch]
        self.on_committed(batch)

    async def _record(self, outcomes: Sequence[Outcome]) -> None:
        await self.store.record_outcomes(outcomes, self.job, self.worker_id)

    async def _commit_alone(self, outcome: Outcome) -> Outcome:
        """Store one outcome; if it cannot be, its item alone ends `failed` (`unstorable`),
        with the call still on record when possible, so the run goes on and the answer is
        never paid for again."""
        try:
            await self._record([outcome])
            return outcome
        except Exception as exc:
            if _transient(exc):
                raise
            reason = _one_line(exc)
            log.error("item %d: its result cannot be stored: %s", outcome.item_id, reason)
        failed = Outcome(
            outcome.item_id,
            ItemStatus.FAILED,
            outcome.attempts,
            "unstorable",
            f"the answer could not be stored: {reason}",
        )
        if outcome.call is not None:
            # Keep the call on record (for `calls` and `attempts`) without the answer's text.
            answer = dataclasses.replace(
                outcome.call.answer, message="(not storable)", recognition=None
            )
            call = dataclasses.replace(outcome.call, answer=answer, result=CallResult.FAILED)
            with_call = dataclasses.replace(failed, call=call)
            try:
                await self._record([with_call])
                return with_call
            except Exception as exc:
                if _transient(exc):
                    raise
        await self._record([failed])
        return failed


def _transient(exc: Exception) -> bool:
    return isinstance(exc, DatabaseError) and exc.transient


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]
