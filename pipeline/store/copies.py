"""Copies: an item done from a recognition of the same content, stored with no call.

A copy gets its own recognition and plates, copied in SQL from the source's (every column,
so whatever a recognition records travels with it), in the transaction of its batch. A copy
whose source is gone by then (its job deleted meanwhile, its answer unstorable) is put back
to pending: the next claim looks the content up again, or pays for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, cast, delete, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from pipeline.records import ItemStatus, Outcome
from pipeline.schema import plates, recognitions

# A copy's recognition is the source's but for these: its item, when, and the latency of a
# call it did not make.
_OWN = {
    "item_id": cast(bindparam("b_item"), recognitions.c.item_id.type),
    "recognized_at": cast(
        bindparam("b_now", type_=recognitions.c.recognized_at.type),
        recognitions.c.recognized_at.type,
    ),
    "latency_ms": literal(0),
}
_COPY_RECOGNITION = insert(recognitions).from_select(
    [c.name for c in recognitions.c],
    select(*(_OWN.get(c.name, c) for c in recognitions.c)).where(
        recognitions.c.item_id == bindparam("b_source")
    ),
)
_COPY_PLATES = insert(plates).from_select(
    [c.name for c in plates.c],
    select(
        *(
            cast(bindparam("b_item"), plates.c.item_id.type) if c.name == "item_id" else c
            for c in plates.c
        )
    ).where(plates.c.item_id == bindparam("b_source")),
)


async def store_copies(
    connection: AsyncConnection, outcomes: Sequence[Outcome], now: datetime
) -> list[Outcome]:
    """Store the recognitions of the copies among `outcomes` (an unchanged item keeps its
    own); `outcomes` again, with those whose source is gone made pending."""
    copies = [o for o in outcomes if o.status == "done" and o.is_copy]
    if copies:
        ids = [o.item_id for o in copies]
        await connection.execute(delete(plates).where(plates.c.item_id.in_(ids)))
        await connection.execute(delete(recognitions).where(recognitions.c.item_id.in_(ids)))
        rows = [{"b_item": o.item_id, "b_source": o.copied_from, "b_now": now} for o in copies]
        await connection.execute(_COPY_RECOGNITION, rows)
        await connection.execute(_COPY_PLATES, rows)
    from_source = [o.item_id for o in outcomes if o.status == "done" and o.copied_from is not None]
    held = select(recognitions.c.item_id).where(recognitions.c.item_id.in_(from_source))
    stored = set((await connection.execute(held)).scalars())
    return [o if o.copied_from is None or o.item_id in stored else _again(o) for o in outcomes]


def _again(outcome: Outcome) -> Outcome:
    """Pending again, as unstarted: nothing was called, nothing counted against it."""
    return dataclasses.replace(
        outcome, status=ItemStatus.PENDING, copied_from=None, copy_of=None, captured_at=None
    )


async def drop_recognitions(
    connection: AsyncConnection, ids: Sequence[int], *, unless_content_known: bool = False
) -> None:
    """Delete the recognitions (and plates) of the items `ids`; with `unless_content_known`,
    only those that do not say which content they are of (stored before 0009)."""
    if not ids:
        return
    gone = select(recognitions.c.item_id).where(recognitions.c.item_id.in_(ids))
    if unless_content_known:
        gone = gone.where(recognitions.c.sha256.is_(None))
    await connection.execute(delete(plates).where(plates.c.item_id.in_(gone)))
    await connection.execute(delete(recognitions).where(recognitions.c.item_id.in_(gone)))


async def drop_stale(connection: AsyncConnection, outcomes: Sequence[Outcome]) -> None:
    """Delete the recognitions that no longer describe their item's file: of items read now
    with another content, or gone, and not done (a done one replaces it)."""
    read = [o for o in outcomes if o.sha256 is not None or o.status in _GONE]
    if not read:
        return
    held = select(recognitions.c.item_id, recognitions.c.sha256).where(
        recognitions.c.item_id.in_([o.item_id for o in read])
    )
    kept = dict((await connection.execute(held)).all())
    stale = [
        o.item_id
        for o in read
        if o.item_id in kept and (o.sha256 is None or kept[o.item_id] != o.sha256)
    ]
    await drop_recognitions(connection, stale)


_GONE = (ItemStatus.SKIPPED, ItemStatus.FAILED)  # with no content read: missing, unreadable
