"""Paying once per picture (pipeline/dedupe.py): calls against distinct contents, and a touched
tree costs nothing.

a. A tree where 30 % of the files are byte-identical copies of others, half of the copies in a
   second job's folder (with new pictures of its own too): the calls of both jobs against the
   distinct contents (target: equal), and every copy `done` with its payer's reads.
b. A finished job of `images` pictures, every file touched (`os.utime`, as `touch` or rsync
   without -t leave it), `run` again: its calls (target 0) and its time.
c. Then the rescan of the unchanged tree, in process (the scan hashes nothing).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

from scripts.bench.common import UNPACED_RATE_PER_S, Bench
from scripts.bench.files import tiny_jpeg, with_comment
from scripts.bench.probes import BenchError
from scripts.bench.scale import scan_and_enqueue
from tests.support.db import query
from tests.support.emulator import Emulator

NAME = "dedupe"
SIZES = ("images",)
COPY_SHARE = 0.30
TOUCHED_CALLS_TARGET = 0


def copies_tree(root: Path, count: int) -> tuple[Path, Path, int]:
    """(first job's folder, second's, distinct contents): 70 % distinct pictures over both,
    30 % copies of the first's, half of them in the second's folder."""
    template = tiny_jpeg()
    copies = int(count * COPY_SHARE)
    distinct = count - copies
    first, second = root / "night1", root / "night2"
    in_first = distinct * 3 // 4
    originals = []
    for n in range(distinct):
        folder = first if n < in_first else second
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"p{n:06d}.jpg"
        path.write_bytes(with_comment(template, n))
        originals.append(path)
    for n in range(copies):
        folder = (first if n % 2 else second) / "copies"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(originals[(n * 7) % in_first], folder / f"c{n:06d}.jpg")
    return first, second, distinct


def run(bench: Bench, db_url: str, emulator: Emulator, job: str, root: Path) -> tuple[int, float]:
    """`platepipe run --job JOB ROOT` to its end: (its calls, by the emulator; seconds)."""
    before = emulator.stats()["calls"]
    finished = bench.platepipe(
        *("run", "--job", job, str(root), "--db", db_url, "--endpoint", emulator.url),
        *("--rate", f"{UNPACED_RATE_PER_S}", "--concurrency", str(bench.sizes.concurrency)),
        "--quiet",
        timeout_s=600,
    )
    if finished.exit_code != 0:
        raise BenchError(f"run {job}: exit {finished.exit_code}: {finished.output[-800:]}")
    return emulator.stats()["calls"] - before, finished.wall_s


def copies_with_other_reads(db_url: str) -> tuple[int, int]:
    """(copies, those whose reads differ from their payer's): plates and result codes."""
    reads: dict[int, list[tuple]] = defaultdict(list)
    for item, *plate in query(
        db_url, "SELECT item_id, idx, value, conf, x1, y1, x3, y3 FROM plates ORDER BY 1, 2"
    ):
        reads[item].append(tuple(plate))
    codes = dict(query(db_url, "SELECT item_id, result_code FROM recognitions"))
    pairs = query(db_url, "SELECT id, copy_of, status FROM items WHERE copy_of IS NOT NULL")
    differ = sum(
        status != "done" or reads[c] != reads[p] or codes.get(c) != codes.get(p)
        for c, p, status in pairs
    )
    return len(pairs), differ


def measure(bench: Bench) -> None:
    sizes, m = bench.sizes, NAME
    emulator = bench.emulator()

    first, second, distinct = copies_tree(bench.path("copies"), sizes.images)
    db_url = bench.sqlite_url("dedupe")
    calls = sum(run(bench, db_url, emulator, job, root)[0] for job, root in
                (("night1", first), ("night2", second)))  # fmt: skip
    bench.figure(
        m,
        f"a. {sizes.images} files, {COPY_SHARE:.0%} copies (some in a second job)",
        f"{calls} calls for {distinct} distinct contents",
        calls,
        target="calls = distinct contents",
        passed=calls == distinct,
    )
    copies, differ = copies_with_other_reads(db_url)
    bench.figure(
        m,
        "a. copies done with their payer's reads",
        f"{copies - differ} of {copies} copies ({sizes.images - distinct} files are copies)",
        copies - differ,
        target="all",
        passed=differ == 0 and copies == sizes.images - distinct,
    )

    tree = bench.tree(sizes.images, distinct=True)
    db_url = bench.sqlite_url("touched")
    paid, paid_s = run(bench, db_url, emulator, "touched", tree.root)
    later = time.time() + 60
    for folder in tree.leaves:
        for name in os.listdir(folder):
            os.utime(folder / name, (later, later))
    calls, seconds = run(bench, db_url, emulator, "touched", tree.root)
    bench.figure(
        m,
        f"b. {tree.files} files touched after a finished job, run again",
        f"{calls} calls in {seconds:.2f}s (the first run: {paid} calls in {paid_s:.2f}s)",
        calls,
        target=f"{TOUCHED_CALLS_TARGET} calls",
        passed=calls == TOUCHED_CALLS_TARGET,
    )
    queued, scan_s = asyncio.run(scan_and_enqueue(db_url, "touched", tree.root))
    bench.figure(
        m,
        f"c. rescan of the unchanged {tree.files} files, in process",
        f"{queued} queued, {tree.files / scan_s:,.0f} files/s",
        tree.files / scan_s,
    )
