"""The claim queue tells the claimer when a claim of half its size fits: an event, not a poll."""

from __future__ import annotations

from pipeline.claimer import ClaimQueue


def test_room_clears_when_full_and_comes_back_at_half():
    queue = ClaimQueue(workers=8)  # 16 places; claims of at least 8
    assert queue.maxsize == 16 and queue.room.is_set()
    for _ in range(9):
        queue.put_nowait(None)
    assert not queue.room.is_set() and queue.free == 7
    queue.get_nowait()
    assert queue.room.is_set() and queue.free == 8


def test_close_drops_unstarted_items_and_ends_each_worker():
    queue = ClaimQueue(workers=2)
    for _ in range(5):
        queue.put_nowait(object())  # type: ignore[arg-type]
    queue.close(workers=2)
    assert [queue.get_nowait(), queue.get_nowait()] == [None, None] and queue.empty()
