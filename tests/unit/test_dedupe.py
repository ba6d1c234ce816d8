"""The in-process side of paying once per content (pipeline/dedupe.py): twins in flight wait
for the first's answer; only a recognized answer is copied. The database side, and the whole
path, are in tests/integration/test_dedupe.py."""

from __future__ import annotations

import asyncio

from pipeline.dedupe import ContentPlan, Dedupe
from pipeline.records import (
    Answer,
    Call,
    CallResult,
    Checked,
    ClaimedItem,
    ItemStatus,
    Outcome,
    utcnow,
)


class Recognitions:
    """The store's look-up: a content -> (source, payer) table, and the look-ups made."""

    def __init__(self, known: dict[str, tuple[int, int]] | None = None) -> None:
        self.known = known or {}
        self.looked_up: list[dict[int, str]] = []

    async def find_recognitions(self, asked: dict[int, str]) -> dict[int, tuple[int, int]]:
        self.looked_up.append(asked)
        await asyncio.sleep(0)
        return {item: self.known[d] for item, d in asked.items() if d in self.known}

    async def recognized(self, digests):
        return {d for d in digests if d in self.known}


def item(n: int) -> ClaimedItem:
    return ClaimedItem(n, f"/a/{n}.jpg", 10, 1.0, 0)


CHECKED = Checked(b"\xff\xd8\xffpicture", 10, 2.0, "c" * 64)


def answered(n: int, status: ItemStatus) -> Outcome:
    """Item `n`'s outcome after a call: done (recognized) or not."""
    answer = Answer("0" if status is ItemStatus.DONE else "-1", "", 0.1)
    result = CallResult.DONE if status is ItemStatus.DONE else CallResult.RETRY
    return Outcome(n, status, 1, call=Call(utcnow(), answer, result), sha256=CHECKED.sha256)


async def test_a_twin_in_flight_waits_and_copies_the_first_s_recognized_answer() -> None:
    dedupe = Dedupe(Recognitions())
    assert await dedupe.before_call(item(1), CHECKED) is None  # it calls
    twin = asyncio.ensure_future(dedupe.before_call(item(2), CHECKED))
    await asyncio.sleep(0.01)
    assert not twin.done()  # waits for the first's answer, no look-up of its own

    dedupe.settle(answered(1, ItemStatus.DONE))
    copy = await twin

    assert copy is not None and copy.status is ItemStatus.DONE and copy.call is None
    assert (copy.copied_from, copy.copy_of, copy.is_copy) == (1, 1, True)
    assert dedupe.store.looked_up == [{1: CHECKED.sha256}]
    # One that comes after the answer, before its commit, copies it too.
    later = await dedupe.before_call(item(3), CHECKED)
    assert later is not None and later.copy_of == 1


async def test_a_twin_calls_itself_when_the_first_was_not_recognized() -> None:
    dedupe = Dedupe(Recognitions())
    assert await dedupe.before_call(item(1), CHECKED) is None
    twins = [asyncio.ensure_future(dedupe.before_call(item(n), CHECKED)) for n in (2, 3)]
    await asyncio.sleep(0.01)

    dedupe.settle(answered(1, ItemStatus.PENDING))  # a retry: nothing to copy
    await asyncio.sleep(0.01)

    # The first twin calls; the other waits on it in turn.
    assert twins[0].done() and twins[0].result() is None
    assert not twins[1].done()
    dedupe.settle(answered(2, ItemStatus.DONE))
    assert (await twins[1]).copy_of == 2


async def test_the_database_s_recognition_is_copied_with_its_payer() -> None:
    dedupe = Dedupe(Recognitions({CHECKED.sha256: (7, 5)}))  # 7 is itself a copy of 5

    copy = await dedupe.before_call(item(1), CHECKED)
    own = await Dedupe(Recognitions({CHECKED.sha256: (1, 1)})).before_call(item(1), CHECKED)

    assert (copy.copied_from, copy.copy_of, copy.is_copy) == (7, 5, True)
    assert (own.copied_from, own.copy_of, own.unchanged, own.is_copy) == (1, None, True, False)


async def test_the_dry_run_counts_recognized_and_repeated_contents() -> None:
    plan = ContentPlan(Recognitions({"a": (1, 1)}))
    await plan.add(["a", "b", "b", None])
    await plan.add(["b", "c"])
    off = ContentPlan(None, enabled=False)
    await off.add(["b", "b"])

    assert (plan.count, off.count) == (3, 0)


async def test_look_ups_asked_together_go_in_one_batch() -> None:
    store = Recognitions({"b": (7, 5)})
    dedupe = Dedupe(store)
    contents = {n: Checked(b"\xff\xd8\xff", 3, 1.0, digest) for n, digest in enumerate("abc")}

    found = await asyncio.gather(*(dedupe.before_call(item(n), c) for n, c in contents.items()))

    assert store.looked_up == [{0: "a", 1: "b", 2: "c"}]
    assert [f and f.copy_of for f in found] == [None, 5, None]


async def test_a_recent_answer_is_reused_only_for_a_while(monkeypatch) -> None:
    # Its recognition may never be stored (a lease lost): later twins ask the database again.
    monkeypatch.setattr("pipeline.dedupe.RECENT_S", -1.0)
    store = Recognitions()
    dedupe = Dedupe(store)
    assert await dedupe.before_call(item(1), CHECKED) is None
    dedupe.settle(answered(1, ItemStatus.DONE))

    assert await dedupe.before_call(item(2), CHECKED) is None  # not found there: it calls

    assert store.looked_up == [{1: CHECKED.sha256}, {2: CHECKED.sha256}]
