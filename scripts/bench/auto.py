"""Concurrency that finds itself: `run --rate 40` with no other flag, on a slow and a fast API.

Slow: the emulator answers in 0.4-1.2 s and refuses past 40 calls a sliding second; the figure
is the calls it admitted per full second against --rate (a fixed 16 in flight would give ~20/s)
and the share it refused. Fast: it answers in 50 ms; the figure is the most calls it ever had
in flight against 2 × rate × latency (no herd on a fast API).
"""

from __future__ import annotations

from scripts.bench.common import Bench
from scripts.bench.rate import report_rate

NAME = "auto"
SIZES = ("rate_per_s", "duration_s")

SLOW_LATENCY = "0.4-1.2"
FAST_LATENCY_S = 0.05
TARGET_RATE = 0.95  # of --rate, sustained on the slow API
TARGET_REFUSED = 0.01
TARGET_IN_FLIGHT = 2.0  # × rate × latency, at most, on the fast API


def measure(bench: Bench) -> None:
    slow_api(bench)
    fast_api(bench)


def slow_api(bench: Bench) -> None:
    m, rate = f"{NAME} slow API", bench.sizes.rate_per_s
    images = max(round(rate * bench.sizes.duration_s), 1)
    tree = bench.tree(images, distinct=True)
    emulator = bench.emulator(latency=SLOW_LATENCY, rate_limit=round(rate))
    before = emulator.stats()
    run = bench.run_job(
        bench.sqlite_url("auto-slow"), emulator, [tree.root], rate=rate, expect=images, pin=False
    )
    stats = emulator.stats()
    report_rate(
        bench,
        m,
        run,
        before,
        stats,
        rate,
        target_rate=TARGET_RATE,
        target_refused=TARGET_REFUSED,
        context=f" at {SLOW_LATENCY} s",
    )
    bench.figure(
        m,
        "peak in flight",
        f"{stats['max_in_flight']} calls (rate × mean latency = {rate * 0.8:.0f})",
        stats["max_in_flight"],
    )
    bench.figure(
        m, "run", f"{images} images in {run.finished.wall_s:.1f}s wall", run.finished.wall_s
    )


def fast_api(bench: Bench) -> None:
    m, rate = f"{NAME} fast API", bench.sizes.rate_per_s
    images = max(round(rate * bench.sizes.duration_s), 1)
    tree = bench.tree(images, distinct=True)
    latency = f"{FAST_LATENCY_S:g}-{FAST_LATENCY_S:g}"
    emulator = bench.emulator(latency=latency, rate_limit=round(rate))
    run = bench.run_job(
        bench.sqlite_url("auto-fast"), emulator, [tree.root], rate=rate, expect=images, pin=False
    )
    peak = emulator.stats()["max_in_flight"]
    bound = TARGET_IN_FLIGHT * rate * FAST_LATENCY_S
    bench.figure(
        m,
        "peak in flight",
        f"{peak} calls at {FAST_LATENCY_S * 1000:.0f} ms against 2 × rate × latency = {bound:g}",
        peak,
        target=f"<= {bound:g}",
        passed=peak <= bound,
    )
    bench.figure(
        m, "run", f"{images} images in {run.finished.wall_s:.1f}s wall", run.finished.wall_s
    )
