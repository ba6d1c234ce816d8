"""Overhead: images/s of a bare aiohttp loop, `platepipe run` on SQLite and `xargs -P 16 curl`.

The same files against the same emulator (no latency), within one run: the figures are the
ratios of `run` to each, and the client CPU per image of curl against run's.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from scripts.bench.common import APP_KEY, SECRET_KEY, TARGETS, UNPACED_RATE_PER_S, Bench
from scripts.bench.files import Tree
from scripts.bench.probes import BenchError, Phase
from tests.support.emulator import Emulator

NAME = "overhead"
SIZES = ("images", "curl_files")


async def bare_loop(
    endpoint: str, root: Path, concurrency: int, *, one_buffer: bool
) -> tuple[int, float]:
    """The floor: walk, read and post every file with `concurrency` requests in flight; no
    database, no checks, blocking reads. With aiohttp's FormData, as a user would script it,
    or (`one_buffer`) with the multipart body framed by hand into one buffer, as platepipe
    sends it. (files, seconds)"""
    from pipeline.client import ImageForm

    started = time.perf_counter()
    paths = (os.path.join(d, f) for d, _, names in os.walk(root) for f in sorted(names))
    sent = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": SECRET_KEY}
    framing = ImageForm()
    if one_buffer:
        headers["Content-Type"] = framing.content_type
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            nonlocal sent
            for path in paths:
                with open(path, "rb") as image:
                    data = image.read()
                if one_buffer:
                    form: Any = framing.body(data, "image.jpg", "image/jpeg")
                else:
                    form = aiohttp.FormData()
                    form.add_field("image", data, filename="image.jpg", content_type="image/jpeg")
                async with session.post(endpoint, data=form) as response:
                    await response.read()
                sent += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sent, time.perf_counter() - started


def curl_loop(bench: Bench, endpoint: str, paths: Sequence[str], parallel: int) -> float:
    """`xargs -P N curl` over `paths`: one curl process per file. Seconds taken."""
    listing = bench.path("curl-files")
    listing.write_bytes(b"".join(os.fsencode(p) + b"\0" for p in paths))
    command = ["xargs", "-0", "-P", str(parallel), "-I{}", "-a", str(listing)]
    command += ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}\\n"]
    command += ["-H", f"Authorization: {SECRET_KEY}", "-F", "image=@{}", endpoint]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.perf_counter() - started
    answered = done.stdout.split().count("200")
    if done.returncode != 0 or answered != len(paths):
        raise BenchError(f"xargs curl: exit {done.returncode}, {answered} answers: {done.stderr}")
    return seconds


def measure(bench: Bench) -> None:
    sizes, m = bench.sizes, NAME
    tree = bench.tree(sizes.images, distinct=True)
    emulator = bench.emulator()
    bare = measure_bare_loops(bench, emulator, tree)  # images/s of each bare loop

    db_url = bench.sqlite_url("overhead")
    run = bench.run_job(db_url, emulator, [tree.root], rate=UNPACED_RATE_PER_S, expect=sizes.images)
    bench.figure(
        m,
        "b. platepipe run (SQLite)",
        run.describe(),
        run.per_s,
    )

    paths = [str(p) for p in sorted(tree.root.rglob("*.jpg"))[: sizes.curl_files]]
    phase = Phase.start(emulator, len(paths))
    curl_s = curl_loop(bench, emulator.endpoint(APP_KEY), paths, sizes.concurrency)
    phase.end(curl_s)
    phase.check("xargs curl")
    curl = len(paths) / curl_s
    bench.figure(
        m,
        f"c. xargs -P {sizes.concurrency} curl",
        f"{len(paths)} images in {curl_s:.2f}s = {curl:.0f}/s; {phase.cpu_text}",
        curl,
    )

    # A user's bare loop posts with FormData; the one-buffer loop already frames the body as
    # platepipe does, the stricter floor. Every verdict is printed.
    against = [(f"bare loop, {label}", per_s, "overhead_vs_bare") for label, per_s in bare.items()]
    for name, per_s, target in [*against, ("xargs curl", curl, "overhead_vs_curl")]:
        digits = 2 if TARGETS[target] < 1 else 1
        bench.figure(
            m,
            f"run / {name}",
            f"{run.per_s / per_s:.{digits}f} "
            f"({run.per_s_after_startup / per_s:.{digits}f} after start-up)",
            run.per_s / per_s,
            target=f">= {TARGETS[target]:g}",
            passed=run.per_s / per_s >= TARGETS[target],
        )
    # On a machine whose CPUs the emulator shares, CPU per image is what bounds either side.
    bench.figure(
        m,
        "client CPU per image, xargs curl / run",
        f"{phase.client_ms:.2f} ms / {run.phase.client_ms:.2f} ms "
        f"= {phase.client_ms / run.phase.client_ms:.1f}",
        phase.client_ms / run.phase.client_ms,
    )


def measure_bare_loops(bench: Bench, emulator: Emulator, tree: Tree) -> dict[str, float]:
    """Images/s of the bare loop posting with FormData, and with a one-buffer body."""
    sizes, m = bench.sizes, NAME
    bare: dict[str, float] = {}
    for label, one_buffer in (("FormData", False), ("one-buffer body", True)):
        phase = Phase.start(emulator, sizes.images)
        sent, bare_s = asyncio.run(
            bare_loop(
                emulator.endpoint(APP_KEY), tree.root, sizes.concurrency, one_buffer=one_buffer
            )
        )
        phase.end(bare_s)
        phase.check(f"bare loop, {label}")
        bare[label] = sent / bare_s
        bench.figure(
            m,
            f"a. bare aiohttp loop, {label}",
            f"{sent} images in {bare_s:.2f}s = {sent / bare_s:.0f}/s; {phase.cpu_text}",
            sent / bare_s,
        )
    return bare
