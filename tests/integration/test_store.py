"""The store and the writer against real databases: liveness of workers, and a batch with
one result the database refuses."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from datetime import timedelta

import pytest

from pipeline.errors import JobBusyError
from pipeline.outcomes import Found, Outcome
from pipeline.schema import workers
from pipeline.store import Store, utcnow
from pipeline.writer import Writer


async def test_a_live_run_on_this_host_holds_its_job_however_old_its_heartbeat(db_url):
    store = await Store.open(db_url)
    try:
        job = await store.ensure_job("j", create=True)
        async with store.engine.begin() as connection:
            await connection.execute(
                workers.insert().values(
                    id=str(uuid.uuid4()),
                    job_id=job.id,
                    host=socket.gethostname(),
                    pid=os.getpid(),  # alive: this very process
                    started_at=utcnow() - timedelta(hours=2),
                    heartbeat_at=utcnow() - timedelta(hours=1),  # a long-blocked loop, say
                )
            )
        with pytest.raises(JobBusyError):
            await store.register_worker(job, str(uuid.uuid4()), kind="run")
    finally:
        await store.close()


async def test_a_dead_run_on_this_host_is_cleared_at_once(db_url):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    store = await Store.open(db_url)
    try:
        job = await store.ensure_job("j", create=True)
        async with store.engine.begin() as connection:
            await connection.execute(
                workers.insert().values(
                    id=str(uuid.uuid4()),
                    job_id=job.id,
                    host=socket.gethostname(),
                    pid=int(gone.stdout),
                    started_at=utcnow(),
                    heartbeat_at=utcnow(),  # fresh, but the process is gone
                )
            )
        await store.register_worker(job, str(uuid.uuid4()), kind="run")
    finally:
        await store.close()


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
            ("/a/2.jpg", "failed", "store_error"),
        ]
        assert len(committed) == 3
    finally:
        await store.close()
