"""Rate fidelity: `run --rate 40` against an emulator refusing past 40 calls a second.

The emulator (50-150 ms latency) admits at most --rate calls in any sliding second; the figure is
the calls it admitted per full second against --rate, and the share it refused.
"""

from __future__ import annotations

import statistics
from typing import Any

from scripts.bench.common import TARGETS, Bench
from scripts.bench.probes import Run

NAME = "rate"
SIZES = ("rate_per_s", "duration_s")


def measure(bench: Bench) -> None:
    sizes, m = bench.sizes, NAME
    rate = sizes.rate_per_s
    images = max(round(rate * sizes.duration_s), 1)
    tree = bench.tree(images, distinct=True)
    emulator = bench.emulator(latency="0.05-0.15", rate_limit=round(rate))
    before = emulator.stats()
    db_url = bench.sqlite_url("rate")
    run = bench.run_job(db_url, emulator, [tree.root], rate=rate, expect=images)
    stats = emulator.stats()
    report_rate(
        bench,
        m,
        run,
        before,
        stats,
        rate,
        target_rate=TARGETS["rate_fidelity"],
        target_refused=TARGETS["refused_max"],
    )
    bench.figure(
        m,
        "calls by start time",
        f"{run.calls.per_s:.2f} calls/s from the attempts table ({run.calls.count} calls)",
        run.calls.per_s,
    )
    bench.figure(
        m,
        "run",
        f"{images} images in {run.finished.wall_s:.1f}s wall (first call after "
        f"{run.startup_s:.2f}s), exit {run.finished.exit_code}",
        run.finished.wall_s,
    )


def report_rate(
    bench: Bench,
    m: str,
    run: Run,
    before: dict[str, Any],
    stats: dict[str, Any],
    rate: float,
    *,
    target_rate: float,
    target_refused: float,
    context: str = "",
) -> None:
    """The figures of a run against a rate-limited emulator: the calls it admitted per full
    second against `rate` (`context`: what to say of the run), and the share it refused."""
    calls = stats["calls"] - before["calls"]
    refused = stats["rate_limited"] - before["rate_limited"]
    per_second = full_seconds(stats["admitted_per_second"])
    if per_second:
        sustained = statistics.fmean(per_second)
        how = f"emulator's admitted calls over {len(per_second)} full seconds"
        how += f" (min {min(per_second)}, max {max(per_second)})"
    else:  # too short a run for one full second: the calls' own start times
        sustained = run.calls.per_s
        how = "attempts table (the run was shorter than 3 s)"
    bench.figure(
        m,
        "sustained rate",
        f"{sustained:.2f} calls/s = {sustained / rate:.1%} of {rate:g}/s{context}, {how}",
        sustained / rate,
        target=f">= {target_rate:.0%}",
        passed=sustained / rate >= target_rate,
    )
    fraction = refused / calls if calls else 0.0
    bench.figure(
        m,
        "refused",
        f"{refused} of {calls} calls = {fraction:.2%}",
        fraction,
        target=f"<= {target_refused:.1%}",
        passed=fraction <= target_refused,
    )


def full_seconds(admitted: list[int]) -> list[int]:
    """Admitted calls per second without the idle seconds around the run and without its
    first and last seconds, which the run fills only in part."""
    busy = [i for i, n in enumerate(admitted) if n]
    if len(busy) < 3:
        return []
    return admitted[busy[0] + 1 : busy[-1]]
