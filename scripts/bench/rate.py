"""Rate fidelity: `run --rate 40` against an emulator refusing past 40 calls a second.

The emulator (50-150 ms latency) admits at most --rate calls in any sliding second; the figure is
the calls it admitted per full second against --rate, and the share it refused.
"""

from __future__ import annotations

import statistics

from scripts.bench.common import TARGETS, Bench

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
        f"{sustained:.2f} calls/s = {sustained / rate:.1%} of {rate:g}/s, {how}",
        sustained / rate,
        target=f">= {TARGETS['rate_fidelity']:.0%}",
        passed=sustained / rate >= TARGETS["rate_fidelity"],
    )
    fraction = refused / calls if calls else 0.0
    bench.figure(
        m,
        "refused",
        f"{refused} of {calls} calls = {fraction:.2%}",
        fraction,
        target=f"<= {TARGETS['refused_max']:.1%}",
        passed=fraction <= TARGETS["refused_max"],
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


def full_seconds(admitted: list[int]) -> list[int]:
    """Admitted calls per second without the idle seconds around the run and without its
    first and last seconds, which the run fills only in part."""
    busy = [i for i, n in enumerate(admitted) if n]
    if len(busy) < 3:
        return []
    return admitted[busy[0] + 1 : busy[-1]]
