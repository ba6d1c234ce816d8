"""Scale: scan + enqueue of a big tree, `status` and resume on it, peak RSS of a small and a
large run.

The tree is tiny JPEGs hard-linked in folders of 500 (a million files in seconds); the scan runs
in process through the product's own `scan_into`, `status` and the resume as a user runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

from scripts.bench.common import TARGETS, UNPACED_RATE_PER_S, Bench
from scripts.bench.files import FILES_PER_FOLDER
from scripts.bench.probes import BenchError, Child
from tests.support.emulator import Emulator

NAME = "scale"
SIZES = ("files", "rss_small", "rss_large")
RESUME_RATE_PER_S = 100
STATS_POLL_S = 0.005
STATUS_REPEATS = 5
NO_DEDUPE = ("--no-dedupe",)  # the RSS tree is hard links: measure calls, not copies


@contextlib.contextmanager
def profiled(output: Path | None) -> Iterator[None]:
    """Profile the block with pyinstrument (async-aware) into `output`; nothing when None."""
    if output is None:
        yield
        return
    from pyinstrument import Profiler

    profiler = Profiler(async_mode="enabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        output.write_text(profiler.output_text(unicode=False, color=False))
        print(f"[profile] {output}", flush=True)


async def scan_and_enqueue(
    db_url: str, job_name: str, root: Path, profile: Path | None = None
) -> tuple[int, float]:
    """The product's scan path, in process: scan_into a Store. (files, seconds)"""
    from pipeline.config import DEFAULT_INCLUDE
    from pipeline.scanner import Filter, ScanStats, scan_into
    from pipeline.store import Store

    async with Store.connect(db_url) as store:
        job = await store.ensure_job(job_name, create=True)
        stats = ScanStats()
        with profiled(profile):
            started = time.perf_counter()
            await scan_into(store, job, [str(root)], Filter(DEFAULT_INCLUDE), stats)
            seconds = time.perf_counter() - started
        return stats.queued, seconds


async def time_summaries(db_url: str, job_name: str, repeats: int) -> list[float]:
    """Seconds of each `Store.summaries(job)`, the query behind `status`, on one open store."""
    from pipeline.store import Store

    async with Store.connect(db_url) as store:
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            (summary,) = await store.summaries(job_name)
            seconds.append(time.perf_counter() - started)
        assert summary.total > 0
        return seconds


def wait_for_first_call(child: Child, emulator: Emulator, calls_before: int) -> float:
    """Seconds from the process's spawn until the emulator has seen a call from it."""
    deadline = time.monotonic() + 120
    while emulator.stats()["calls"] <= calls_before:
        if not child.running or time.monotonic() > deadline:
            child.kill()
            raise BenchError(f"resume: no call; {child.output.read_text()[-800:]}")
        time.sleep(STATS_POLL_S)
    return time.perf_counter() - child.started


def measure(bench: Bench) -> None:
    sizes, m = bench.sizes, NAME
    tree = bench.tree(sizes.files, distinct=False)
    bench.figure(
        m,
        "tree",
        f"{tree.files} tiny JPEGs in {len(tree.leaves)} folders, made in {tree.seconds:.1f}s",
        tree.seconds,
    )
    db_url, job = bench.sqlite_url("scale"), "bench-scale"
    profile = bench.profile_dir / "scan.pyinstrument.txt" if bench.profile_dir else None
    queued, scan_s = asyncio.run(scan_and_enqueue(db_url, job, tree.root, profile))
    if queued != tree.files:
        raise BenchError(f"scan queued {queued} of {tree.files} files")
    per_s = queued / scan_s
    bench.figure(
        m,
        "scan + enqueue (SQLite)",
        f"{queued} files in {scan_s:.1f}s = {per_s:,.0f} files/s",
        per_s,
        target=f">= {TARGETS['scan_files_per_s']:,} files/s",
        passed=per_s >= TARGETS["scan_files_per_s"],
    )
    measure_status(bench, db_url, job, queued)
    measure_resume(bench, db_url, job, queued)
    measure_rss(bench)


def measure_status(bench: Bench, db_url: str, job: str, queued: int) -> None:
    """The query behind `status`, in process, and the whole `platepipe status` process."""
    m = NAME
    seconds = asyncio.run(time_summaries(db_url, job, STATUS_REPEATS))
    bench.figure(
        m,
        f"Store.summaries(job), {queued} items",
        f"slowest of {len(seconds)} {max(seconds) * 1000:.0f} ms, "
        f"median {statistics.median(seconds) * 1000:.0f} ms",
        max(seconds),
        target=f"< {TARGETS['status_max_s'] * 1000:.0f} ms",
        passed=max(seconds) < TARGETS["status_max_s"],
    )
    status = bench.platepipe("status", "--job", job, "--db", db_url)
    if status.exit_code != 0:
        raise BenchError(f"status: exit {status.exit_code}: {status.output[-500:]}")
    baseline = bench.platepipe("--version")
    bench.figure(
        m,
        "platepipe status (process wall)",
        f"{status.wall_s * 1000:.0f} ms, of which interpreter and imports "
        f"(`platepipe --version`) {baseline.wall_s * 1000:.0f} ms",
        status.wall_s,
    )


def measure_resume(bench: Bench, db_url: str, job: str, queued: int) -> None:
    """Seconds from `platepipe run --job` on the scanned job to its first call."""
    m = NAME
    emulator = bench.emulator()
    calls_before = emulator.stats()["calls"]
    child = bench.start(
        *("run", "--job", job, "--db", db_url, "--endpoint", emulator.url),
        *("--rate", str(RESUME_RATE_PER_S), "--quiet"),
    )
    first_call_s = wait_for_first_call(child, emulator, calls_before)
    child.signal(signal.SIGTERM)
    stopped = child.wait(120)
    if stopped.exit_code != 3:
        raise BenchError(f"resume: exit {stopped.exit_code} after SIGTERM: {stopped.output}")
    bench.figure(
        m,
        f"resume, {queued} items",
        f"first call {first_call_s:.2f}s after `platepipe run --job` started",
        first_call_s,
        target=f"< {TARGETS['resume_max_s']:g} s",
        passed=first_call_s < TARGETS["resume_max_s"],
    )


def measure_rss(bench: Bench) -> None:
    sizes, m = bench.sizes, NAME
    tree = bench.tree(max(sizes.files, sizes.rss_large), distinct=False)
    emulator = bench.emulator()
    runs = []
    for count in (sizes.rss_small, sizes.rss_large):
        leaves = tree.leaves_for(count)
        images = min(len(leaves) * FILES_PER_FOLDER, tree.files)
        db_url = bench.sqlite_url(f"rss-{count}")
        # Its files are hard links to a few: every one is sent, as the figure always measured.
        run = bench.run_job(
            db_url, emulator, leaves, rate=UNPACED_RATE_PER_S, expect=images, options=NO_DEDUPE
        )
        runs.append(run)
        bench.figure(
            m,
            f"peak RSS, {images} images",
            f"{run.finished.max_rss_mb:.1f} MB ({run.per_s:.0f} images/s over "
            f"{run.finished.wall_s:.0f}s)",
            run.finished.max_rss_mb,
        )
    small, large = runs
    growth = large.finished.max_rss_mb - small.finished.max_rss_mb
    bench.figure(
        m,
        f"peak RSS growth, {small.images} -> {large.images} images",
        f"{growth:+.1f} MB",
        growth,
        target=f"<= +{TARGETS['rss_growth_max_mb']:g} MB",
        passed=growth <= TARGETS["rss_growth_max_mb"],
    )
