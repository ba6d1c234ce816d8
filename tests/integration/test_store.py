"""The store and the writer against real databases: liveness of workers (heartbeats by the
database's clock, pids that are reused), fencing of leases, registrations and migrations that
start together, and a batch with one result the database refuses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from pipeline.db import HEAD_REVISION
from pipeline.errors import JobBusyError
from pipeline.liveness import process_key
from pipeline.records import (
    Answer,
    Call,
    CallResult,
    ClaimedItem,
    Found,
    ItemStatus,
    Job,
    Outcome,
    Plate,
    Recognition,
    utcnow,
)
from pipeline.schema import items, workers
from pipeline.store import Store
from pipeline.writer import Writer


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """A store on each database in turn, closed after the test."""
    async with Store.connect(db_url) as opened:
        yield opened


async def _add_worker(
    store: Store,
    job: Job,
    pid: int,
    started_ago: timedelta = timedelta(0),
    heartbeat_ago: timedelta = timedelta(0),
    process: str | None = None,
) -> None:
    """A `run` of process `pid` on this host in the workers registry, as a process that left
    no lock behind would have written it (on PostgreSQL, then, a dead one)."""
    async with store.engine.begin() as connection:
        await connection.execute(
            workers.insert().values(
                id=str(uuid.uuid4()),
                job_id=job.id,
                host=socket.gethostname(),
                pid=pid,
                process=process,
                started_at=utcnow() - started_ago,
                heartbeat_at=utcnow() - heartbeat_ago,
            )
        )


async def _set_heartbeat_age(store: Store, worker_id: str, age: timedelta) -> None:
    """Make a worker look silent for `age` (as if its process had been paused that long)."""
    async with store.engine.begin() as connection:
        await connection.execute(
            workers.update().where(workers.c.id == worker_id).values(heartbeat_at=utcnow() - age)
        )


async def test_a_live_run_holds_its_job(store: Store):
    job = await store.ensure_job("j", create=True)
    # A second process, as far as the database can tell.
    async with Store.connect(store.url) as other:
        await other.register_worker(job, str(uuid.uuid4()), kind="run")
        with pytest.raises(JobBusyError):
            await store.register_worker(job, str(uuid.uuid4()), kind="run")
    # Its lock released (PostgreSQL) or its registration a stale one: the job is free again.


async def test_a_heartbeat_older_than_the_timeout_is_dead_even_when_the_pid_lives(
    store: Store, caplog
):
    job = await store.ensure_job("j", create=True)
    # This very process, but silent for an hour: stuck in the kernel, say.
    silent = timedelta(seconds=store.heartbeat_timeout_s + 3600)
    await _add_worker(store, job, os.getpid(), timedelta(hours=2), silent, process_key())
    await store.register_worker(job, str(uuid.uuid4()), kind="run")
    assert "taking over from `run`" in caplog.text


async def test_a_pid_reused_by_another_process_is_not_the_registered_one(store: Store):
    job = await store.ensure_job("j", create=True)
    # A fresh heartbeat and a live pid (ours), but not the process that registered: another
    # start time, as after a reboot or in a restarted container where every run is pid 1.
    where, _, started = (process_key() or "").rpartition("/")
    await _add_worker(store, job, os.getpid(), process=f"{where}/{int(started) - 100}")
    await store.register_worker(job, str(uuid.uuid4()), kind="run")


async def test_a_dead_run_on_this_host_is_cleared_at_once(store: Store):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    job = await store.ensure_job("j", create=True)
    await _add_worker(store, job, int(gone.stdout))  # a fresh heartbeat, the process gone
    await store.register_worker(job, str(uuid.uuid4()), kind="run")


async def test_a_worker_taken_for_dead_stores_nothing_over_the_newer_result(store: Store):
    job = await store.ensure_job("j", create=True)
    await store.add_items(job, [Found(f"/a/{n}.jpg", 10, 1.0) for n in range(3)])
    await store.register_worker(job, "paused", kind="work")
    held = await store.claim_batch(job, "paused", 10)
    assert {i.lease for i in held} == {"paused"}
    async with Store.connect(store.url) as other:
        await other.register_worker(job, "healthy", kind="work")
        await _set_heartbeat_age(store, "paused", timedelta(seconds=store.heartbeat_timeout_s + 5))
        seen = await other.coordinate(job, "healthy")
        assert (seen.reclaimed, seen.lost) == (3, False)
        taken = await other.claim_batch(job, "healthy", 10)
        assert [i.id for i in taken] == [i.id for i in held]
        await other.record_outcomes([_done(taken[0], "NEW")], job, "healthy")

        # The paused worker wakes up with its answers: none of them lands.
        await store.record_outcomes([_done(i, "OLD") for i in held], job, "paused")
        rows = await store.query(
            "SELECT i.path, i.status, i.lease_owner, r.raw_response FROM items i"
            " LEFT JOIN recognitions r ON r.item_id = i.id ORDER BY i.path"
        )
        assert [tuple(r) for r in rows] == [
            ("/a/0.jpg", "done", None, "NEW"),
            ("/a/1.jpg", "running", "healthy", None),
            ("/a/2.jpg", "running", "healthy", None),
        ]
        # Its calls were paid all the same.
        assert await store.query("SELECT calls FROM jobs") == [(4,)]
        # It learns at its next heartbeat, and claims nothing under its old token.
        assert (await store.coordinate(job, "paused")).lost
        assert await store.claim_batch(job, "paused", 10) == []


async def test_a_lease_lasts_while_its_worker_beats_and_ends_when_it_stops(store: Store):
    job = await store.ensure_job("j", create=True)
    await store.add_items(job, [Found("/a/0.jpg", 10, 1.0)])
    await store.register_worker(job, "w1", kind="work")
    await store.claim_batch(job, "w1", 10)
    await store.coordinate(job, "w1")
    assert await store.reclaim_orphans(job) == 0
    # The lease expired (by the database's clock) though the registration is still there.
    async with store.engine.begin() as connection:
        await connection.execute(
            items.update().values(lease_expires_at=utcnow() - timedelta(hours=1))
        )
    assert await store.reclaim_orphans(job) == 1


async def test_two_runs_registering_at_once_admit_one(postgres_url):
    async with contextlib.AsyncExitStack() as stack:
        stores = [await stack.enter_async_context(Store.connect(postgres_url)) for _ in range(4)]
        job = await stores[0].ensure_job("j", create=True)
        outcomes = await asyncio.gather(
            *(s.register_worker(job, str(uuid.uuid4()), kind="run") for s in stores),
            return_exceptions=True,
        )
        assert sum(o == 0 for o in outcomes) == 1, outcomes
        assert sum(isinstance(o, JobBusyError) for o in outcomes) == 3, outcomes


async def test_four_processes_bringing_a_fresh_database_up_at_once_all_succeed(postgres_url):
    async with contextlib.AsyncExitStack() as stack:
        opened = await asyncio.gather(
            *(stack.enter_async_context(Store.connect(postgres_url)) for _ in range(4))
        )
        assert {await s.schema_revision() for s in opened} == {HEAD_REVISION}


def _done(item: ClaimedItem, raw: str) -> Outcome:
    answer = Answer("0", "SUCCESS", 0.01, 200, Recognition("jpg", "normal", (), raw))
    return Outcome(item.id, ItemStatus.DONE, 1, call=Call(utcnow(), answer, CallResult.DONE))


async def test_a_result_the_database_refuses_fails_alone(postgres_url):
    async with Store.connect(postgres_url) as store:
        job = await store.ensure_job("j", create=True)
        await store.add_items(job, [Found(f"/a/{n}.jpg", 10, 1.0) for n in range(3)])
        await store.register_worker(job, "w1")
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


async def test_an_answer_the_driver_cannot_encode_fails_its_item_alone(db_url):
    """A lone surrogate is no text either database takes: the item ends `failed unstorable`,
    its call stays on record, the rest of the batch is stored, nothing raises."""
    async with Store.connect(db_url) as store:
        job = await store.ensure_job("j", create=True)
        await store.add_items(job, [Found(f"/a/{n}.jpg", 10, 1.0) for n in range(3)])
        await store.register_worker(job, "w1")
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


async def test_a_scan_batch_queues_new_and_changed_files_and_leaves_the_rest(store: Store):
    job = await store.ensure_job("j", create=True)
    first = [Found(f"/a/{n}.jpg", 10, 1.0) for n in range(4)]
    # A path twice in one batch is one item.
    assert await store.add_items(job, [*first, first[0]]) == 4
    await store.register_worker(job, "w1")
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
    await store.register_worker(job, "w1")
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


async def test_live_workers_shows_each_with_its_heartbeat_items_and_share(store: Store):
    job = await store.ensure_job("j", create=True)
    await store.add_items(job, [Found(f"/a/{n}.jpg", 10, 1.0) for n in range(3)])
    await store.register_worker(job, "w1", kind="work")
    await store.claim_batch(job, "w1", 2)
    await store.coordinate(job, "w1", rate_share=7.5)

    (shown,) = await store.live_workers("j")
    assert (shown.host, shown.pid, shown.kind) == (socket.gethostname(), os.getpid(), "work")
    assert (shown.items_held, shown.rate_share) == (2, 7.5)
    assert 0 <= shown.heartbeat_age_s < 5
    assert await store.live_workers("no such job") == []
