"""Results: a batch of outcomes stored in one transaction (recognitions, plates, item states,
the calls), fenced by the lease of the worker that made them."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    String,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from pipeline.records import (
    CallResult,
    Fit,
    Job,
    Outcome,
    utcnow,
)
from pipeline.schema import attempts, items, plates, recognitions
from pipeline.store.budget import add_usage
from pipeline.store.copies import drop_stale, store_copies
from pipeline.store.engine import StoreBase, retried, touch
from pipeline.store.queue import leased

log = logging.getLogger(__name__)

CLOCK_SHIFT_IGNORED = timedelta(seconds=1)  # a host this close to the database's clock is on it


class ResultsMixin(StoreBase):
    @retried
    async def record_outcomes(
        self, outcomes: Sequence[Outcome], job: Job, worker_id: str | None = None
    ) -> None:
        """Store a batch in one transaction: recognitions, plates, item states, the calls.

        A recognition replaces any earlier one of the same item, so an item processed twice
        still has exactly one. A non-done outcome only applies to an item still `running`
        (under `worker_id`'s lease, when given), so a late failure never undoes a result or a
        claim of another worker.

        Fencing: with `worker_id`, the lease's token, only outcomes of items still `running`
        under it are stored; the others, whose lease ran out while this worker was silent,
        belong to whoever took them over, and are dropped (their calls are still counted).
        Times this host set (retry times, call starts) are moved onto the database's clock.
        """
        host_now = utcnow()
        async with self._begin() as connection:
            now = await self._clock(connection)
            outcomes = _on_db_clock(outcomes, now - host_now)
            paid = [o for o in outcomes if o.call is not None]  # counted, fenced or not
            if worker_id is not None:
                outcomes = await self._still_leased(connection, outcomes, worker_id)
            done = [o for o in outcomes if o.status == "done"]
            if done:
                await self._store_recognitions(connection, done, now)
            if any(o.copied_from is not None for o in done):
                # After the calls' own: a copy's source may be in this very batch.
                outcomes = await store_copies(connection, outcomes, now)
                done = [o for o in outcomes if o.status == "done"]
            # The ledger: every call, and the copies stored (not those fenced off or put back);
            # the calls' budget holds end with it.
            copies = [o for o in done if o.is_copy]
            await add_usage(connection, self._insert, [*paid, *copies], job.id)
            if done:
                await connection.execute(
                    _SET_DONE.where(*leased(worker_id)), [_done_row(o, now) for o in done]
                )
            other = [o for o in outcomes if o.status != "done"]
            await drop_stale(connection, other)
            if other:
                still_ours = [items.c.status == "running", *leased(worker_id)]
                await connection.execute(
                    _SET_STATE.where(*still_ours), [_state_row(o, now) for o in other]
                )
            if paid:
                await connection.execute(_INSERT_ATTEMPT, [_attempt_row(o) for o in paid])
            reached = sum(o.call.answer.reached for o in paid)  # type: ignore[union-attr]
            await touch(connection, job, now, calls=reached)

    async def _store_recognitions(
        self, connection: AsyncConnection, done: Sequence[Outcome], now: datetime
    ) -> None:
        """The recognitions and plates of the calls among `done`, each replacing the item's
        earlier one (a copy's is already stored, an unchanged item's kept)."""
        paid = [o for o in done if o.copied_from is None]
        if not paid:
            return
        ids = [o.item_id for o in paid]
        await connection.execute(delete(plates).where(plates.c.item_id.in_(ids)))
        await connection.execute(delete(recognitions).where(recognitions.c.item_id.in_(ids)))
        await connection.execute(insert(recognitions), list(_recognition_rows(paid, now)))
        plate_rows = list(_plate_rows(paid))
        if plate_rows:
            await connection.execute(insert(plates), plate_rows)

    async def _still_leased(
        self, connection: AsyncConnection, outcomes: Sequence[Outcome], worker_id: str
    ) -> Sequence[Outcome]:
        """Those of `outcomes` whose items are still `running` under `worker_id`'s lease,
        locked until the commit so that no reaper takes them meanwhile."""
        ids = [o.item_id for o in outcomes]
        if not ids:
            return outcomes
        held = select(items.c.id).where(*leased(worker_id), items.c.id.in_(ids))
        if self._postgres:
            held = held.with_for_update()
        ours = set((await connection.execute(held)).scalars())
        paid = sum(o.call is not None for o in outcomes if o.item_id not in ours)
        if paid:
            log.warning(
                "%d answers dropped: their items were taken over while this worker was silent "
                "(another worker sends or sent them)",
                paid,
            )
        return [o for o in outcomes if o.item_id in ours]


_SET_STATE = (
    update(items)
    .where(items.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        error_code=bindparam("b_error_code"),
        error_message=bindparam("b_error_message"),
        next_attempt_at=bindparam("b_next_attempt_at"),
        captured_at=func.coalesce(
            items.c.captured_at, bindparam("b_captured_at", type_=items.c.captured_at.type)
        ),
        size=func.coalesce(bindparam("b_size", type_=BigInteger), items.c.size),
        mtime=func.coalesce(bindparam("b_mtime", type_=Float), items.c.mtime),
        sha256=func.coalesce(bindparam("b_sha256", type_=String), items.c.sha256),
        lease_owner=None,
        lease_expires_at=None,
        updated_at=bindparam("b_now"),
    )
)


def _state_row(outcome: Outcome, now: datetime) -> dict[str, Any]:
    return {
        "b_id": outcome.item_id,
        "b_status": outcome.status,
        "b_attempts": outcome.attempts,
        "b_error_code": outcome.error_code,
        "b_error_message": outcome.error_message,
        "b_next_attempt_at": outcome.next_attempt_at,
        "b_captured_at": outcome.captured_at,
        "b_size": outcome.size,
        "b_mtime": outcome.mtime,
        "b_sha256": outcome.sha256,
        "b_now": now,
    }


# A done item also says who paid for its result (None: itself); other outcomes leave it.
_SET_DONE = _SET_STATE.values(copy_of=bindparam("b_copy_of"))


def _done_row(outcome: Outcome, now: datetime) -> dict[str, Any]:
    return {**_state_row(outcome, now), "b_copy_of": outcome.copy_of}


# Attempts are numbered 1, 2, 3, ... per item, whatever each one's outcome: throttled, paused
# and fatal calls leave the item's `attempts` as they were, but each is still one more call.
_INSERT_ATTEMPT = insert(attempts).values(
    item_id=bindparam("b_item"),
    attempt=select(func.count() + 1)
    .where(attempts.c.item_id == bindparam("b_item"))
    .scalar_subquery(),
)


def _attempt_row(outcome: Outcome) -> dict[str, Any]:
    call = outcome.call
    assert call is not None
    answer = call.answer
    return {
        "b_item": outcome.item_id,
        "started_at": call.started_at,
        "duration_ms": round(answer.latency_s * 1000),
        "outcome": call.result,
        "code": answer.code,
        "http_status": answer.http_status,
        "message": None if call.result is CallResult.DONE else answer.message,
    }


def _recognition_rows(done: Iterable[Outcome], now: datetime) -> Iterable[dict[str, Any]]:
    for outcome in done:
        recognition = outcome.recognition
        assert outcome.call is not None and recognition is not None, "done carries its result"
        yield {
            "item_id": outcome.item_id,
            "file_type": recognition.file_type,
            "resolution": recognition.resolution,
            "latency_ms": round(outcome.call.answer.latency_s * 1000),
            "raw_response": recognition.raw,
            "result_code": recognition.result_code,
            "recognized_at": now,
            **_fit_columns(outcome.fit),
            "sha256": outcome.sha256,
        }


BOX_COLUMNS = ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4")


def _plate_rows(done: Iterable[Outcome]) -> Iterable[dict[str, Any]]:
    for outcome in done:
        assert outcome.recognition is not None
        for idx, plate in enumerate(outcome.recognition.plates):
            box = plate.box or (None,) * len(BOX_COLUMNS)
            yield {
                "item_id": outcome.item_id,
                "idx": idx,
                "value": plate.value,
                "conf": plate.conf,
                **dict(zip(BOX_COLUMNS, box, strict=True)),
            }


def _fit_columns(fit: Fit | None) -> dict[str, Any]:
    """What was sent for a picture fitted to the API's limit (pipeline/fitting.py); NULLs
    when the file went as it is."""
    if fit is None:
        return {"fit_bytes": None, "fit_scale": None, "fit_quality": None}
    return {"fit_bytes": fit.sent_bytes, "fit_scale": fit.scale, "fit_quality": fit.quality}


def _on_db_clock(outcomes: Sequence[Outcome], shift: timedelta) -> Sequence[Outcome]:
    """`outcomes` with the times this host's clock set moved by `shift`, the database's clock
    less this host's: a retry due in 10 s is due in 10 s by the clock that `claim_batch` reads,
    however far this host's clock is off."""
    if abs(shift) < CLOCK_SHIFT_IGNORED:
        return outcomes
    return [
        dataclasses.replace(
            o,
            next_attempt_at=o.next_attempt_at and o.next_attempt_at + shift,
            call=o.call and dataclasses.replace(o.call, started_at=o.call.started_at + shift),
        )
        for o in outcomes
    ]
