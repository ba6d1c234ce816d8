"""Workers: images/s of 4 `work` processes on one PostgreSQL job against 1, within one run.

With the API answering in 200 ms and a small per-worker concurrency, throughput is bound by
calls in flight, so N workers should approach N times one. Target (issue 6): 4 workers reach
at least 3x the images/s of one.
"""

from __future__ import annotations

import time

from scripts.bench.common import TARGETS, Bench
from scripts.bench.files import Tree
from scripts.bench.probes import BenchError
from tests.support.emulator import Emulator

NAME = "workers"
SIZES = ("worker_images", "worker_latency_s", "worker_concurrency")
WORKER_RATE_PER_S = 1000
WORKER_TIMEOUT_S = 1800


def measure(bench: Bench) -> None:
    sizes, m = bench.sizes, NAME
    if not bench.postgres_reachable(m):
        return
    tree = bench.tree(sizes.worker_images, distinct=True)
    emulator = bench.emulator(latency=f"{sizes.worker_latency_s:g}")
    calls_before = emulator.stats()["calls"]
    per_s = {}
    for workers in (1, 4):
        per_s[workers], seconds = run_workers(bench, workers, tree, emulator)
        bench.figure(
            m,
            f"{workers} worker{'s' if workers > 1 else ''}",
            f"{per_s[workers]:.1f} images/s ({seconds:.1f} s), {tree.files} images, "
            f"{sizes.worker_latency_s * 1000:.0f} ms API latency, "
            f"concurrency {sizes.worker_concurrency} per worker",
            per_s[workers],
        )
    calls = emulator.stats()["calls"] - calls_before
    bench.figure(m, "calls made", f"{calls} for {2 * tree.files} image-runs", calls)
    ratio = per_s[4] / per_s[1]
    bench.figure(
        m,
        "ratio 4/1",
        f"{ratio:.2f}x",
        ratio,
        target=f">= {TARGETS['workers_4_vs_1']:.1f}x",
        passed=ratio >= TARGETS["workers_4_vs_1"],
    )


def run_workers(bench: Bench, workers: int, tree: Tree, emulator: Emulator) -> tuple[float, float]:
    """(images/s, seconds) of `workers` `work` processes on a new job of `tree`'s images."""
    db_url = bench.postgres_database()
    scanned = bench.platepipe("scan", "--job", "bench", str(tree.root), "--db", db_url)
    if scanned.exit_code != 0:
        raise BenchError(f"scan failed ({scanned.exit_code}): {scanned.output[-500:]}")
    args = ["work", "--job", "bench", "--db", db_url, "--endpoint", emulator.url]
    args += ["--rate", str(WORKER_RATE_PER_S), "--quiet"]
    args += ["--concurrency", str(bench.sizes.worker_concurrency)]
    started = time.monotonic()
    children = [bench.start(*args) for _ in range(workers)]
    for child in children:
        finished = child.wait(WORKER_TIMEOUT_S)
        if finished.exit_code != 0:
            raise BenchError(f"a worker failed ({finished.exit_code}): {finished.output[-500:]}")
    elapsed = time.monotonic() - started
    return tree.files / elapsed, elapsed
