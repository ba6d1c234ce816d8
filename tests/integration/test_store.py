"""The store and the writer against real databases: liveness of workers, and a batch with
one result the database refuses."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from pipeline.errors import JobBusyError
from pipeline.outcomes import (
    Answer,
    Call,
    CallResult,
    Found,
    ItemStatus,
    Outcome,
    Plate,
    Recognition,
)
from pipeline.schema import workers
from pipeline.store import Job, Store, utcnow
from pipeline.writer import Writer


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """A store on each database in turn, closed after the test."""
    opened = await Store.open(db_url)
    yield opened
    await opened.close()


async def _add_worker(
    store: Store,
    job: Job,
    pid: int,
    started_ago: timedelta = timedelta(0),
    heartbeat_ago: timedelta = timedelta(0),
) -> None:
    """A `run` of process `pid` on this host in the workers registry."""
    async with store.engine.begin() as connection:
        await connection.execute(
            workers.insert().values(
                id=str(uuid.uuid4()),
                job_id=job.id,
                host=socket.gethostname(),
                pid=pid,
                started_at=utcnow() - started_ago,
                heartbeat_at=utcnow() - heartbeat_ago,
            )
        )


async def test_a_live_run_on_this_host_holds_its_job_however_old_its_heartbeat(store: Store):
    job = await store.ensure_job("j", create=True)
    # Alive (this very process), its heartbeat an hour old: a long-blocked loop, say.
    await _add_worker(store, job, os.getpid(), timedelta(hours=2), timedelta(hours=1))
    with pytest.raises(JobBusyError):
        await store.register_worker(job, str(uuid.uuid4()), kind="run")


async def test_a_dead_run_on_this_host_is_cleared_at_once(store: Store):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    job = await store.ensure_job("j", create=True)
    await _add_worker(store, job, int(gone.stdout))  # a fresh heartbeat, the process gone
    await store.register_worker(job, str(uuid.uuid4()), kind="run")


async def test_a_result_the_database_refuses_fails_alone(postgres_url):
    store = await Store.open(postgres_url)
    try:
        job = await store.ensure_job("j", create=True)
        await store.add_items(job, [Found(f"/a/{n}.jpg", 10, 1.0) for n in range(3)])
        claimed = await store.claim_batch(job, "w1", 10)
        good = [Outcome(i.id, "skipped", 0, "empty", "zero bytes") for i in claimed[:2]]
        # PostgreSQL refuses an error code longer than its column: a DataError, not transient.
        bad = Outcome(claimed[2].id, "skipped", 0, "x" * 100, "too long a code")
        committed = []
        writer = Writer(store, job, "w1", committed.extend)
        for outcome in (*good, bad):
            await writer.queue.put(outcome)
        await writer.queue.put(None)

        await asyncio.wait_for(writer.run(), 30)

        rows = await store.query("SELECT path, status, error_code FROM items ORDER BY path")
        assert rows == [
            ("/a/0.jpg", "skipped", "empty"),
            ("/a/1.jpg", "skipped", "empty"),
            ("/a/2.jpg", "failed", "unstorable"),
        ]
        assert len(committed) == 3
    finally:
        await store.close()


async def test_an_answer_the_driver_cannot_encode_fails_its_item_alone(db_url):
    """A lone surrogate is no text either database takes: the item ends `failed unstorable`,
    its call stays on record, the rest of the batch is stored, nothing raises."""
    store = await Store.open(db_url)
    try:
        job = await store.ensure_job("j", create=True)
        await store.add_items(job, [Found(f"/a/{n}.jpg", 10, 1.0) for n in range(3)])
        claimed = await store.claim_batch(job, "w1", 10)

        def done(item_id: int, value: str) -> Outcome:
            plate = Plate(value, 0.9, None)
            recognition = Recognition("jpg", "normal", (plate,), raw="{}")
            answer = Answer("0", "SUCCESS", 0.01, 200, recognition)
            call = Call(utcnow(), answer, CallResult.DONE)
            return Outcome(item_id, ItemStatus.DONE, 1, call=call)

        batch = [
            done(claimed[0].id, "12가3456"),
            done(claimed[1].id, "bad\ud800"),
            done(claimed[2].id, "34나5678"),
        ]
        committed = []
        writer = Writer(store, job, "w1", committed.extend)
        for outcome in batch:
            await writer.queue.put(outcome)
        await writer.queue.put(None)

        await asyncio.wait_for(writer.run(), 30)

        rows = await store.query("SELECT path, status, error_code FROM items ORDER BY path")
        assert rows == [
            ("/a/0.jpg", "done", None),
            ("/a/1.jpg", "failed", "unstorable"),
            ("/a/2.jpg", "done", None),
        ]
        calls = await store.query("SELECT count(*) FROM attempts")
        assert calls == [(3,)]  # the unstorable answer was paid for: it stays on record
        assert await store.query("SELECT calls FROM jobs") == [(3,)]
        assert len(committed) == 3
    finally:
        await store.close()


async def test_a_scan_batch_queues_new_and_changed_files_and_leaves_the_rest(store: Store):
    job = await store.ensure_job("j", create=True)
    first = [Found(f"/a/{n}.jpg", 10, 1.0) for n in range(4)]
    # A path twice in one batch is one item.
    assert await store.add_items(job, [*first, first[0]]) == 4
    claimed = {i.path: i for i in await store.claim_batch(job, "w1", 10)}
    outcomes = [Outcome(claimed[f"/a/{n}.jpg"].id, "failed", 3, "4000001", "bad") for n in (0, 1)]
    await store.record_outcomes(outcomes, job, "w1")  # /a/2 and /a/3 stay running

    again = [
        Found("/a/0.jpg", 10, 1.0),  # unchanged: stays failed
        Found("/a/1.jpg", 11, 1.0),  # changed size: queued again, attempts reset
        Found("/a/2.jpg", 10, 2.0),  # changed mtime but in flight: left alone
        Found("/a/4.jpg", 10, 1.0),  # new
    ]
    assert await store.add_items(job, again) == 2
    assert await store.add_items(job, again) == 0  # a rescan of the same tree: nothing

    rows = await store.query("SELECT path, status, attempts, size, error_code FROM items")
    assert sorted(tuple(r) for r in rows) == [
        ("/a/0.jpg", "failed", 3, 10, "4000001"),
        ("/a/1.jpg", "pending", 0, 11, None),
        ("/a/2.jpg", "running", 0, 10, None),
        ("/a/3.jpg", "running", 0, 10, None),
        ("/a/4.jpg", "pending", 0, 10, None),
    ]


async def test_status_counts_codes_and_last_activity(store: Store):
    job = await store.ensure_job("j", create=True)
    other = await store.ensure_job("other", create=True)
    await store.add_items(job, [Found(f"/a/{n}.jpg", 10, 1.0) for n in range(6)])
    await store.add_items(other, [Found("/b/0.jpg", 10, 1.0)])
    (before,) = await store.summaries("j")
    claimed = await store.claim_batch(job, "w1", 4)
    await store.record_outcomes(
        [
            Outcome(claimed[0].id, "skipped", 0, "empty", "zero bytes"),
            Outcome(claimed[1].id, "skipped", 0, "empty", "zero bytes"),
            Outcome(claimed[2].id, "failed", 1, "4000003", "bad image"),
        ],
        job,
        "w1",
    )

    (summary,) = await store.summaries("j")
    assert summary.counts == {
        "pending": 2, "running": 1, "done": 0, "failed": 1, "skipped": 2
    }  # fmt: skip
    assert summary.error_codes == {"empty": 2, "4000003": 1}
    assert summary.last_activity is not None and before.last_activity is not None
    assert summary.last_activity > before.last_activity
    names = [s.name for s in await store.summaries()]
    assert names == ["j", "other"]
    assert (await store.summaries("other"))[0].counts["pending"] == 1
