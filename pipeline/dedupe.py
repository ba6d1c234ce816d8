"""Content, not paths, decides what is paid for: a picture whose bytes were recognized already
(any path, any job of the database) is `done` from that recognition with no call.

The content is the file's SHA-256, hashed by the pre-flight read on the bytes read for the
call (`preflight.read_checked`: never a second read; the scan hashes nothing, so a rescan
stays at its speed). Before a call, `Dedupe.before_call` looks the digest up:

- in this process first: an item of the same content whose call is in flight is waited for
  (a map from digest to a future), and copied if it was recognized; if it was not (a failure,
  a retry), the waiter goes on and calls itself. Two items of the same content in flight in
  one process pay once. Two processes that read the same content in the same instant both
  pay (each looks the database up before the other's answer is there): nothing holds a
  database-wide lock for a content;
- then in the database (`recognitions.sha256`, indexed): the item's own recognition first (a
  file touched, or copied back by rsync without -t: size or mtime changed, content not), else
  any other item's, whose payer (`items.copy_of`, else the item itself) the copy points at.

Only recognized answers (a recognition: plates, or none) are copied; failures never are. The
writer stores a copy in the batch's transaction, fenced by the lease as any outcome
(`store.record_outcomes`): its own recognition row and plates, copied in SQL from the source.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from typing import Protocol

from pipeline.records import Checked, ClaimedItem, ItemStatus, Outcome

# (the item whose recognition is copied, the item whose call paid for it)
Source = tuple[int, int]

# Contents recognized in this process lately, kept until their recognition is surely
# committed (the writer commits within a batch's linger): an item that comes just after its
# twin's answer finds neither a call in flight nor a row yet. Bounded: 64-byte keys, ~1 MB.
# Not for longer: should that recognition never be stored (its lease lost), its copies are put
# back to pending, and must then find the database's answer, not this one again.
RECENT_CONTENTS = 8192
RECENT_S = 10.0
# How long the first look-up of a batch waits for others, so that a batch is one hand-off (one
# transaction on PostgreSQL): a look-up each through the store's engine cost 1.5 ms of CPU an
# image (3,000 tiny images on SQLite, 2.6 ms for all the rest). Before a call that takes
# 400 ms, 5 ms is nothing.
LOOK_UP_LINGER_S = 0.005


class Recognitions(Protocol):
    def find_recognitions(self, asked: dict[int, str]) -> Awaitable[dict[int, Source]]: ...


class Dedupe:
    """One process's look-ups of content before calls: the database's recognitions, and the
    calls in flight in this process, by digest."""

    def __init__(self, store: Recognitions) -> None:
        self.store = store
        self._in_flight: dict[str, asyncio.Future[Source | None]] = {}
        self._owners: dict[int, str] = {}  # item -> the digest whose future it settles
        self._recent: OrderedDict[str, tuple[Source, float]] = OrderedDict()  # monotonic
        # Look-ups asked while one is out go in the next, together: one transaction a batch.
        self._asked: dict[int, tuple[str, asyncio.Future[Source | None]]] = {}
        self._looking: asyncio.Task[None] | None = None

    async def before_call(self, item: ClaimedItem, checked: Checked) -> Outcome | None:
        """A `done` outcome with no call when `checked`'s content was recognized; None: the
        item calls. Then it settles (`settle`) those that wait on the same content."""
        digest = checked.sha256
        if digest is None:
            return None
        while (pending := self._in_flight.get(digest)) is not None:
            # Shielded: a waiter cancelled (a second signal) leaves the others' future alone.
            source = await asyncio.shield(pending)
            if source is not None:
                return copy_outcome(item, checked, source)
        if (recent := self._recently(digest)) is not None:
            return copy_outcome(item, checked, recent)
        self._in_flight[digest] = asyncio.get_running_loop().create_future()
        self._owners[item.id] = digest
        try:
            source = await self._look_up(item.id, digest)
        except BaseException:
            self._settle(item.id, None)
            raise
        if source is None:
            return None
        self._settle(item.id, source)
        return copy_outcome(item, checked, source)

    async def _look_up(self, item_id: int, digest: str) -> Source | None:
        """The database's recognition of `digest` for `item_id`, looked up with the others
        asked meanwhile."""
        answer: asyncio.Future[Source | None] = asyncio.get_running_loop().create_future()
        self._asked[item_id] = (digest, answer)
        if self._looking is None or self._looking.done():
            self._looking = asyncio.create_task(self._look_up_asked(), name="dedupe-look-up")
        return await answer

    async def _look_up_asked(self) -> None:
        await asyncio.sleep(LOOK_UP_LINGER_S)
        while self._asked:
            asked, self._asked = self._asked, {}
            try:
                found = await self.store.find_recognitions({i: d for i, (d, _) in asked.items()})
            except Exception as exc:  # each asker raises it (a database away too long)
                for _, answer in asked.values():
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            for item_id, (_, answer) in asked.items():
                if not answer.done():  # its asker was cancelled meanwhile
                    answer.set_result(found.get(item_id))

    def settle(self, outcome: Outcome) -> None:
        """The item's outcome is with the writer: whoever waits on its content copies it if
        a call recognized it, else calls itself. A no-op for an item that owned nothing."""
        source = None
        if outcome.status is ItemStatus.DONE and outcome.call is not None:
            source = (outcome.item_id, outcome.item_id)  # it paid
        self._settle(outcome.item_id, source)

    def _settle(self, item_id: int, source: Source | None) -> None:
        digest = self._owners.pop(item_id, None)
        if digest is None:
            return
        future = self._in_flight.pop(digest)
        if not future.done():
            future.set_result(source)
        if source is not None:
            self._recent[digest] = (source, time.monotonic())
            if len(self._recent) > RECENT_CONTENTS:
                self._recent.popitem(last=False)

    def _recently(self, digest: str) -> Source | None:
        source, at = self._recent.get(digest, (None, 0.0))
        if source is not None and time.monotonic() - at > RECENT_S:
            del self._recent[digest]
            return None
        return source


def copy_outcome(item: ClaimedItem, checked: Checked, source: Source) -> Outcome:
    """`item` done from `source`'s recognition, no call: its `copy_of` is the payer (None
    when the item is its own payer: it paid once, was touched, and costs nothing now)."""
    copied_from, payer = source
    return Outcome(
        item.id,
        ItemStatus.DONE,
        item.attempts,
        size=checked.size,
        mtime=checked.mtime,
        sha256=checked.sha256,
        copied_from=copied_from,
        copy_of=None if payer == item.id else payer,
    )


class Digests(Protocol):
    def recognized(self, digests: Sequence[str]) -> Awaitable[set[str]]: ...


class ContentPlan:
    """The dry run's side of it: of the files a run would send, those whose content is
    recognized in the database already, or comes a second time in the plan, make no call
    (as in the run, the first of two copies is assumed recognized: retries aside)."""

    def __init__(self, store: Digests | None = None, enabled: bool = True) -> None:
        self.store = store
        self.enabled = enabled
        self.count = 0
        self._planned: set[str] = set()

    async def add(self, digests: Sequence[str | None]) -> None:
        """Count the copies among `digests`, the contents of files a run would send."""
        if not self.enabled:
            return
        known = [d for d in digests if d is not None]
        recognized = await self.store.recognized(known) if self.store is not None else set()
        for digest in known:
            if digest in recognized or digest in self._planned:
                self.count += 1
            else:
                self._planned.add(digest)
