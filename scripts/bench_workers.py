"""How `work` scales across processes: 1 worker against 4 on one PostgreSQL job.

With the API answering in 200 ms and a small per-worker concurrency, throughput is bound by
calls in flight, so N workers should approach N times one. Target (issue 6): 4 workers reach
at least 3x the images/s of one.

    python scripts/bench_workers.py                    # 800 images, the real figure
    python scripts/bench_workers.py --images 40        # a quick look

Traffic goes only to 127.0.0.1 (the bundled emulator); scratch PostgreSQL databases and temp
files are removed at the end. The servers, processes and files are bench.py's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench import FULL, Bench, BenchError, Emulator, Tree, check_loopback, default_postgres_url

TARGET_RATIO = 3.0
WORKER_TIMEOUT_S = 1800


def measure(bench: Bench, workers: int, tree: Tree, emulator: Emulator, concurrency: int):
    """(images/s, seconds) of `workers` `work` processes on a job of `tree`'s images."""
    db_url = bench.postgres_database()
    scanned = bench.platepipe("scan", "--job", "bench", str(tree.root), "--db", db_url)
    if scanned.exit_code != 0:
        raise BenchError(f"scan failed ({scanned.exit_code}): {scanned.output[-500:]}")
    args = ("work", "--job", "bench", "--db", db_url, "--endpoint", emulator.url)
    args += ("--rate", "1000", "--concurrency", str(concurrency), "--quiet")
    started = time.monotonic()
    children = [bench.start(*args) for _ in range(workers)]
    for child in children:
        finished = child.wait(WORKER_TIMEOUT_S)
        if finished.exit_code != 0:
            raise BenchError(f"a worker failed ({finished.exit_code}): {finished.output[-500:]}")
    elapsed = time.monotonic() - started
    return tree.files / elapsed, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=2, help="per worker")
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="platepipe-bench-"))
    bench = Bench(workdir, FULL, check_loopback(default_postgres_url()))
    try:
        tree = bench.tree(options.images, distinct=True)
        emulator = bench.emulator(latency=str(options.latency))
        one, one_s = measure(bench, 1, tree, emulator, options.concurrency)
        four, four_s = measure(bench, 4, tree, emulator, options.concurrency)
        calls = emulator.stats()["calls"]
    except BenchError as exc:
        raise SystemExit(f"workers: {exc}") from exc
    finally:
        bench.close()
    ratio = four / one
    print(f"workers: {options.images} images, {options.latency * 1000:.0f} ms API latency, "
          f"concurrency {options.concurrency} per worker")  # fmt: skip
    print(f"  1 worker : {one:7.1f} images/s ({one_s:.1f} s)")
    print(f"  4 workers: {four:7.1f} images/s ({four_s:.1f} s)")
    print(f"  calls made: {calls} for {2 * options.images} image-runs")
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"  ratio 4/1: {ratio:.2f}x (target >= {TARGET_RATIO:.1f}x) {verdict}")


if __name__ == "__main__":
    main()
