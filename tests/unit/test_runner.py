"""The runner's task supervision: a failed stage ends the run, never a hang or a false success."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from pipeline.records import JobSummary
from pipeline.runner import RunReport
from pipeline.scanner import ScanStats
from pipeline.stages import finish_workers, watch
from pipeline.workers import PoolStats


async def test_a_failed_scanner_stops_the_claimer_and_raises():
    claimer_cancelled = asyncio.Event()

    async def claimer():
        try:
            await asyncio.sleep(60)
        finally:
            claimer_cancelled.set()

    async def scanner():
        await asyncio.sleep(0.01)
        raise RuntimeError("the scan broke")

    writer = asyncio.create_task(asyncio.sleep(60))
    scan = asyncio.create_task(scanner())
    with pytest.raises(RuntimeError, match="the scan broke"):
        await asyncio.wait_for(watch(claimer(), [writer, scan]), 5)
    assert claimer_cancelled.is_set()
    writer.cancel()


async def test_a_scanner_that_ends_well_lets_the_claimer_finish():
    async def claimer():
        await asyncio.sleep(0.05)

    scan = asyncio.create_task(asyncio.sleep(0.01))
    writer = asyncio.create_task(asyncio.sleep(60))

    await asyncio.wait_for(watch(claimer(), [writer, scan]), 5)

    assert scan.done() and not writer.done()
    writer.cancel()


async def test_workers_stuck_on_a_dead_writer_are_cancelled():
    full = asyncio.Queue(maxsize=1)
    full.put_nowait("result nobody takes")

    async def worker():
        await full.put("another")  # blocks forever: the writer is gone

    async def writer():
        raise RuntimeError("database gone")

    workers = [asyncio.create_task(worker()) for _ in range(3)]
    writer_task = asyncio.create_task(writer())

    await asyncio.wait_for(finish_workers(workers, writer_task), 5)

    assert all(w.cancelled() for w in workers)


async def test_workers_finish_their_calls_while_the_writer_lives():
    async def worker():
        await asyncio.sleep(0.05)
        return "answered"

    workers = [asyncio.create_task(worker()) for _ in range(3)]
    writer_task = asyncio.create_task(asyncio.sleep(60))

    await finish_workers(workers, writer_task)

    assert [w.result() for w in workers] == ["answered"] * 3
    writer_task.cancel()


def _report(counts: dict[str, int], unreadable_dirs: int, stopped_by: str | None = None):
    full = {"pending": 0, "running": 0, "done": 0, "failed": 0, "skipped": 0, **counts}
    summary = JobSummary("j", full, {}, 0, datetime(2026, 11, 24), None)
    scan = ScanStats(files=1, unreadable_dirs=unreadable_dirs, finished=True)
    return RunReport(summary, scan, PoolStats(), 1.0, stopped_by)


@pytest.mark.parametrize(
    ("counts", "unreadable", "code"),
    [
        ({"done": 5}, 0, 0),
        ({"done": 5}, 1, 4),  # a folder nobody could list: its images were never queued
        ({"done": 5, "failed": 1}, 2, 4),
        ({"done": 5, "pending": 3}, 1, 3),  # stopped early wins: run it again
    ],
)
def test_a_folder_that_could_not_be_listed_is_exit_4(counts, unreadable, code):
    assert _report(counts, unreadable).exit_code == code
