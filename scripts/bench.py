#!/usr/bin/env python3
"""The benchmarks of issue 5: rate fidelity, per-image overhead, scale, PostgreSQL.

Each measurement starts what it needs on 127.0.0.1 (the bundled emulator, `platepipe` as a
user runs it), makes its files and databases in a temporary folder, prints its figures with
the target and PASS or FAIL, and removes everything it made. No traffic leaves the machine.

    python scripts/bench.py rate                    # ~35 s: --rate 40 against a 40/s limit
    python scripts/bench.py overhead                # bare aiohttp loop vs run vs xargs curl
    python scripts/bench.py scale --files 1000000   # scan, status, resume, peak RSS: minutes
    python scripts/bench.py postgres                # run on PostgreSQL vs SQLite
    python scripts/bench.py all --quick             # every one at tiny sizes (the smoke test)

Every figure is one stdout line, `[measurement] what: figure`, followed by `(target ...)`
and PASS or FAIL where issue 5 sets a target; `--json FILE` writes them out as well. The
exit code is 0 when every measurement ran, whatever the verdicts (`--strict`: 1 on a FAIL),
and 1 when one could not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import click
from PIL import Image
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `pipeline` from this checkout, installed or not

PYTHON = sys.executable
APP_KEY = "bench-app-key"
SECRET_KEY = "bench-secret-key"
LOOPBACK = "127.0.0.1"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", ""})
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_URL_ENVS = ("PLATEPIPE_BENCH_POSTGRES_URL", "PLATEPIPE_TEST_POSTGRES_URL")

UNPACED_RATE_PER_S = 1_000_000  # `run --rate` when the pipeline should not pace at all
RESUME_RATE_PER_S = 100
FILES_PER_FOLDER = 500
FOLDERS_PER_PARENT = 50
EMULATOR_START_S = 30.0
STATS_POLL_S = 0.005
STATUS_REPEATS = 5
SAFETY_FACTOR = 10  # a run may take this many times its expected time before it is killed
MIN_RUN_TIMEOUT_S = 120.0
MB = 1024 * 1024
PROFILE_RATE_HZ = 200
PROFILE_TOP_FRAMES = 15
QUIET_BUSY = 0.10  # the machine counts as quiet below this fraction of its CPUs busy


@dataclass(frozen=True)
class Sizes:
    rate_per_s: float = 40.0
    duration_s: float = 30.0  # of the rate run, at rate_per_s
    images: int = 10_000  # overhead and postgres
    curl_files: int = 500
    files: int = 1_000_000  # the scale tree
    rss_small: int = 20_000
    rss_large: int = 200_000
    concurrency: int = 16


FULL = Sizes()
QUICK = Sizes(
    duration_s=2.0, images=150, curl_files=20, files=2_000, rss_small=200, rss_large=1_000
)

TARGETS = {
    "rate_fidelity": 0.97,
    "refused_max": 0.005,
    "overhead_vs_bare": 0.5,
    "overhead_vs_curl": 10.0,
    "scan_files_per_s": 50_000,
    "status_max_s": 0.100,
    "resume_max_s": 2.0,
    "rss_growth_max_mb": 30.0,
    "postgres_vs_sqlite": 0.8,
}


class BenchError(Exception):
    """A measurement could not be taken (a process failed, a server did not start, ...)."""


# -- figures --------------------------------------------------------------------------------


@dataclass
class Figure:
    measurement: str
    name: str
    text: str
    value: float | None = None
    target: str | None = None
    passed: bool | None = None  # None: information, no target

    def line(self) -> str:
        line = f"[{self.measurement}] {self.name}: {self.text}"
        if self.target is not None:
            line += f"  (target {self.target})  {'PASS' if self.passed else 'FAIL'}"
        return line


# -- files ----------------------------------------------------------------------------------


def tiny_jpeg(tag: int | None = None) -> bytes:
    """A real 32x24 JPEG of ~650 bytes; `tag` goes into a comment so every file differs."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (96, 96, 96)).save(buffer, "JPEG", quality=50)
    data = buffer.getvalue()
    return data if tag is None else with_comment(data, tag)


def with_comment(jpeg: bytes, tag: int) -> bytes:
    payload = f"platepipe-bench {tag}".encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


@dataclass
class Tree:
    root: Path
    leaves: list[Path]  # folders of FILES_PER_FOLDER files, in creation order
    files: int
    seconds: float

    def leaves_for(self, count: int) -> list[Path]:
        """The first whole folders holding at least `count` files."""
        return self.leaves[: -(-count // FILES_PER_FOLDER)]


def make_tree(root: Path, count: int, *, distinct: bool) -> Tree:
    """`count` tiny JPEGs in folders of FILES_PER_FOLDER, FOLDERS_PER_PARENT folders a parent.

    `distinct`: every file its own bytes. Otherwise each folder's files are hard links to one
    file (ext4 allows 65,000 links an inode), so a million-file tree is made in seconds.
    """
    started = time.perf_counter()
    template = tiny_jpeg()
    leaves = []
    for start in range(0, count, FILES_PER_FOLDER):
        n = start // FILES_PER_FOLDER
        leaf = root / f"p{n // FOLDERS_PER_PARENT:04d}" / f"d{n:06d}"
        leaf.mkdir(parents=True)
        leaves.append(leaf)
        first = None
        for i in range(start, min(start + FILES_PER_FOLDER, count)):
            path = os.path.join(leaf, f"f{i:07d}.jpg")
            if distinct or first is None:
                with open(path, "wb") as out:
                    out.write(with_comment(template, i) if distinct else template)
                first = path
            else:
                try:
                    os.link(first, path)
                except OSError:  # no hard links here (or too many): a copy will do
                    with open(path, "wb") as out:
                        out.write(template)
    return Tree(root, leaves, count, time.perf_counter() - started)


# -- processes ------------------------------------------------------------------------------


@dataclass
class Finished:
    exit_code: int
    wall_s: float
    max_rss_mb: float
    output: str


class Child:
    """A `platepipe` process, reaped by os.wait4 in a thread: wall time and peak RSS exact."""

    def __init__(
        self, process: subprocess.Popen[bytes], output: Path, started: float, wall_started: float
    ) -> None:
        self.process = process
        self.output = output
        self.started = started  # time.perf_counter() just before it was spawned
        self.wall_started = wall_started  # time.time() at the same moment
        self._reaped: tuple[int, int, Any] | None = None
        self._ended = 0.0
        self._reaper = threading.Thread(target=self._reap, daemon=True)
        self._reaper.start()

    def _reap(self) -> None:
        self._reaped = os.wait4(self.process.pid, 0)
        self._ended = time.perf_counter()

    @property
    def running(self) -> bool:
        return self._reaper.is_alive()

    def signal(self, signum: int) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signum)

    def wait(self, timeout_s: float) -> Finished:
        self._reaper.join(timeout_s)
        if self.running:
            self.kill()
            raise BenchError(f"{self.describe()} took longer than {timeout_s:.0f}s: killed")
        assert self._reaped is not None
        _pid, status, usage = self._reaped
        exit_code = os.waitstatus_to_exitcode(status)
        self.process.returncode = exit_code  # reaped here: Popen must not wait for it again
        return Finished(
            exit_code,
            self._ended - self.started,
            usage.ru_maxrss * 1024 / MB,  # kilobytes on Linux
            self.output.read_text(errors="replace"),
        )

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self._reaper.join(10)

    def describe(self) -> str:
        args = list(self.process.args)  # type: ignore[arg-type]
        return "platepipe " + " ".join(args[args.index("pipeline") + 1 :][:2])


@dataclass
class Emulator:
    url: str
    process: subprocess.Popen[bytes]

    @property
    def endpoint(self) -> str:
        return f"{self.url}/v1.0/appkeys/{APP_KEY}/vehicle-plate"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_emulator/stats", timeout=10) as response:
            return json.load(response)

    def successes(self, stats: dict[str, Any] | None = None) -> int:
        """Answers that were an image's own: its plate (0) or none (4000201)."""
        by_code = (stats or self.stats())["by_code"]
        return by_code.get("0", 0) + by_code.get("4000201", 0)

    def cpu_s(self) -> float:
        return process_cpu_s(self.process.pid)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cpu:
    """CPU seconds used so far: by the whole machine, the emulator, and this bench process
    with its reaped children (the bare loop runs in it; `platepipe`, xargs and curl are its
    children). Two of them give a phase's CPU cost per image, and whether something else on
    the machine competed with it."""

    machine_busy_s: float
    emulator_s: float
    client_s: float

    @classmethod
    def now(cls, emulator: Emulator) -> Cpu:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        client = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
        return cls(machine_busy_s(), emulator.cpu_s(), client)

    def client_ms(self, before: Cpu, images: int) -> float:
        """Milliseconds of client CPU per image since `before`."""
        return (self.client_s - before.client_s) * 1000 / images

    def text(self, before: Cpu, images: int, wall_s: float) -> str:
        client, server = self.client_s - before.client_s, self.emulator_s - before.emulator_s
        busy = self.machine_busy_s - before.machine_busy_s
        others = max(busy - client - server, 0.0)
        cpus = os.cpu_count() or 1
        return (
            f"CPU/image: client {client * 1000 / images:.2f} ms, emulator "
            f"{server * 1000 / images:.2f} ms; machine {busy / wall_s / cpus:.0%} busy, "
            f"other processes {others / wall_s / cpus:.0%}"
        )


@dataclass
class Phase:
    """One stretch of work against the emulator, over `images` images: its CPU per image,
    and whether the emulator answered exactly one success per image."""

    emulator: Emulator
    images: int
    successes: int = 0
    before: Cpu | None = None
    cpu_text: str = ""  # as Cpu.text, once ended
    client_ms: float = 0.0  # client CPU per image, once ended

    @classmethod
    def start(cls, emulator: Emulator, images: int) -> Phase:
        successes = emulator.successes()  # before the CPU snapshot: this request costs CPU too
        return cls(emulator, images, successes, Cpu.now(emulator))

    def end(self, wall_s: float) -> None:
        assert self.before is not None
        after = Cpu.now(self.emulator)
        self.cpu_text = after.text(self.before, self.images, wall_s)
        self.client_ms = after.client_ms(self.before, self.images)
        self.successes = self.emulator.successes() - self.successes

    def check(self, what: str) -> None:
        """After `end`: BenchError unless every image got its one success."""
        if self.successes != self.images:
            raise BenchError(f"{what}: {self.successes} successes for {self.images} images")


def machine_busy_s() -> float:
    """CPU seconds the machine spent not idle since boot, every CPU (Linux /proc/stat)."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Bench:
    workdir: Path
    sizes: Sizes
    postgres_url: str
    figures: list[Figure] = field(default_factory=list)
    _emulators: dict[tuple[str, int], Emulator] = field(default_factory=dict)
    _children: list[Child] = field(default_factory=list)
    _databases: list[str] = field(default_factory=list)
    _trees: dict[tuple[int, bool], Tree] = field(default_factory=dict)
    _counter: int = 0
    profile_dir: Path | None = None  # --profile: py-spy and pyinstrument profiles go here
    _profiles: list[Path] = field(default_factory=list)

    # -- bookkeeping --

    def figure(
        self,
        measurement: str,
        name: str,
        text: str,
        value: float | None = None,
        *,
        target: str | None = None,
        passed: bool | None = None,
    ) -> None:
        figure = Figure(measurement, name, text, value, target, passed)
        self.figures.append(figure)
        print(figure.line(), flush=True)

    def path(self, stem: str) -> Path:
        self._counter += 1
        return self.workdir / f"{self._counter:02d}-{stem}"

    def sqlite_url(self, stem: str) -> str:
        return f"sqlite:///{self.path(stem)}.db"

    def tree(self, count: int, *, distinct: bool) -> Tree:
        key = (count, distinct)
        if key not in self._trees:
            name = f"{'images' if distinct else 'tree'}-{count}"
            self._trees[key] = make_tree(self.path(name), count, distinct=distinct)
        return self._trees[key]

    def close(self) -> None:
        """Stop every process, drop every database and remove every file this run made."""
        for child in self._children:
            if child.running:
                child.kill()
        for emulator in self._emulators.values():
            stop(emulator.process)
        for name in self._databases:
            with contextlib.suppress(Exception):
                asyncio.run(pg_execute(self.postgres_url, f'DROP DATABASE IF EXISTS "{name}"'))
        shutil.rmtree(self.workdir, ignore_errors=True)

    def postgres_database(self) -> str:
        """A new, empty PostgreSQL database on the server; dropped by `close`."""
        name = f"platepipe_bench_{uuid.uuid4().hex[:10]}"
        asyncio.run(pg_execute(self.postgres_url, f'CREATE DATABASE "{name}"'))
        self._databases.append(name)
        url = make_url(self.postgres_url).set(database=name)
        return url.render_as_string(hide_password=False)

    def print_profile(self) -> None:
        """With --profile: where the last profiled run spent its samples."""
        while self._profiles:
            path = self._profiles.pop()
            if path.exists():
                print(f"[profile] {path}", flush=True)
                for line in profile_summary(path.read_text(), PROFILE_TOP_FRAMES):
                    print(f"[profile]   {line}", flush=True)

    # -- processes --

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NHN_OCR_", "PLATEPIPE_"))}
        pythonpath = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        return {
            **env,
            "PYTHONPATH": pythonpath,
            "NHN_OCR_APP_KEY": APP_KEY,
            "NHN_OCR_SECRET_KEY": SECRET_KEY,
        }

    def emulator(self, *, latency: str = "0", rate_limit: int = 0) -> Emulator:
        """The emulator on 127.0.0.1 with these settings, started once per bench run."""
        key = (latency, rate_limit)
        if key in self._emulators:
            return self._emulators[key]
        log = self.path("emulator.out")
        args = ["--host", LOOPBACK, "--port", "0", "--latency", latency]
        args += ["--rate-limit", str(rate_limit)]
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [PYTHON, "-m", "pipeline", "emulator", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=self.workdir,
            )
        deadline = time.monotonic() + EMULATOR_START_S
        while not (found := re.search(r"listening on (http://\S+)", log.read_text())):
            if process.poll() is not None or time.monotonic() > deadline:
                stop(process)
                raise BenchError(f"the emulator did not start: {log.read_text()[-500:]}")
            time.sleep(0.02)
        emulator = Emulator(found.group(1), process)
        self._emulators[key] = emulator
        return emulator

    def start(self, *args: str) -> Child:
        """`platepipe ARGS` as a user runs it, output to a file; under py-spy with --profile."""
        output = self.path(f"{args[0]}.out")
        command = [PYTHON, "-m", "pipeline", *args]
        if self.profile_dir is not None and args[0] == "run":
            profile = self.profile_dir / f"{output.name}.py-spy.txt"
            self._profiles.append(profile)
            py_spy = shutil.which("py-spy") or str(Path(PYTHON).with_name("py-spy"))
            record = [py_spy, "record", "--format", "raw", "--rate", str(PROFILE_RATE_HZ)]
            command = [*record, "--output", str(profile), "--", *command]
        with open(output, "wb") as out:
            started, wall_started = time.perf_counter(), time.time()
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=self.workdir,
            )
        child = Child(process, output, started, wall_started)
        self._children.append(child)
        return child

    def platepipe(self, *args: str, timeout_s: float = MIN_RUN_TIMEOUT_S) -> Finished:
        return self.start(*args).wait(timeout_s)

    def run_job(
        self, db_url: str, emulator: Emulator, roots: Sequence[Path], *, rate: float, expect: int
    ) -> Run:
        """`platepipe run` over `roots` into a new job; checks every image ended `done`."""
        job = f"bench-{uuid.uuid4().hex[:8]}"
        expected_s = expect / min(rate, 100.0) + 30  # 100/s: slower than any run seen
        timeout_s = max(MIN_RUN_TIMEOUT_S, expected_s * SAFETY_FACTOR)
        args = ["run", "--job", job, *map(str, roots), "--db", db_url]
        args += ["--endpoint", emulator.url, "--rate", f"{rate:g}", "--quiet"]
        args += ["--concurrency", str(self.sizes.concurrency)]
        args += ["--max-duration", f"{timeout_s:.0f}"]  # a second stop, should ours fail
        phase = Phase.start(emulator, expect)
        child = self.start(*args)
        finished = child.wait(timeout_s + 60)
        phase.end(finished.wall_s)
        self.print_profile()
        counts, calls = db_counts(db_url)
        if finished.exit_code != 0 or counts.get("done", 0) != expect:
            raise BenchError(
                f"run over {expect} images: exit {finished.exit_code}, items {counts}: "
                f"{finished.output[-800:]}"
            )
        phase.check("platepipe run")
        return Run(finished, child.wall_started, expect, calls, phase)


@dataclass
class Run:
    finished: Finished
    wall_started: float  # time.time() at spawn
    images: int
    calls: CallWindow
    phase: Phase  # CPU per image

    @property
    def per_s(self) -> float:
        return self.images / self.finished.wall_s

    def describe(self) -> str:
        return (
            f"{self.images} images in {self.finished.wall_s:.2f}s wall = {self.per_s:.0f}/s "
            f"({self.per_s_after_startup:.0f}/s after its {self.startup_s:.2f}s start-up); "
            f"{self.phase.cpu_text}"
        )

    @property
    def startup_s(self) -> float:
        """Spawn to the first call: interpreter, imports, migrations, job set-up."""
        return self.calls.first - self.wall_started

    @property
    def per_s_after_startup(self) -> float:
        return self.images / max(self.finished.wall_s - self.startup_s, 1e-9)


def profile_summary(raw: str, top: int) -> list[str]:
    """py-spy's raw (collapsed) stacks: the frames with the most samples of their own, then
    platepipe's own frames by the samples under them."""
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples, frames = int(count), stack.split(";")
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            if "(pipeline/" in frame:
                under[frame] += samples
    if not total:
        return ["no samples"]
    lines = [f"{n / total:6.1%} self   {frame}" for frame, n in own.most_common(top)]
    return lines + [f"{n / total:6.1%} total  {frame}" for frame, n in under.most_common(top)]


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- databases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallWindow:
    count: int
    first: float  # epoch seconds of the first call's started_at
    last: float

    @property
    def per_s(self) -> float:
        return (self.count - 1) / (self.last - self.first) if self.last > self.first else 0.0


def db_counts(url: str) -> tuple[dict[str, int], CallWindow]:
    """Items per status, and the calls of the attempts table: read after the run ended."""
    statuses = "SELECT status, count(*) FROM items GROUP BY status"
    window = "SELECT count(*), min(started_at), max(started_at) FROM attempts"
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(make_url(url).database)) as connection:
            counts = dict(connection.execute(statuses).fetchall())
            count, first, last = connection.execute(window).fetchone()
    else:
        counts, (count, first, last) = asyncio.run(pg_fetch(url, statuses, window))
    return counts, CallWindow(count, _epoch(first), _epoch(last))


def _epoch(stamp: datetime | str | None) -> float:
    """The store's naive-UTC times as epoch seconds."""
    if stamp is None:
        return 0.0
    if isinstance(stamp, str):
        stamp = datetime.fromisoformat(stamp)
    return stamp.replace(tzinfo=UTC).timestamp()


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def pg_execute(url: str, statement: str) -> None:
    connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def pg_fetch(url: str, statuses: str, window: str) -> tuple[dict[str, int], tuple]:
    connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=10)
    try:
        counts = {row[0]: row[1] for row in await connection.fetch(statuses)}
        return counts, tuple(await connection.fetchrow(window))
    finally:
        await connection.close()


def default_postgres_url() -> str:
    named = (os.environ[e] for e in POSTGRES_URL_ENVS if os.environ.get(e))
    return next(named, DEFAULT_POSTGRES_URL)


def check_loopback(url: str) -> str:
    """The PostgreSQL URL, if it names this machine: the bench sends nothing elsewhere."""
    host = make_url(url).host or ""
    if host not in LOOPBACK_HOSTS and not host.startswith("127."):
        raise click.BadParameter(f"{host!r} is not this machine: give a 127.0.0.1 URL")
    return url


# -- 1. rate fidelity -----------------------------------------------------------------------


def measure_rate(bench: Bench) -> None:
    sizes, m = bench.sizes, "rate"
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


# -- 2. overhead ----------------------------------------------------------------------------


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


def measure_overhead(bench: Bench) -> None:
    sizes, m = bench.sizes, "overhead"
    tree = bench.tree(sizes.images, distinct=True)
    emulator = bench.emulator()

    bare: dict[str, float] = {}  # images/s of each bare loop
    for label, one_buffer in (("FormData", False), ("one-buffer body", True)):
        phase = Phase.start(emulator, sizes.images)
        sent, bare_s = asyncio.run(
            bare_loop(emulator.endpoint, tree.root, sizes.concurrency, one_buffer=one_buffer)
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

    db_url = bench.sqlite_url("overhead")
    run = bench.run_job(db_url, emulator, [tree.root], rate=UNPACED_RATE_PER_S, expect=sent)
    bench.figure(
        m,
        "b. platepipe run (SQLite)",
        run.describe(),
        run.per_s,
    )

    paths = [str(p) for p in sorted(tree.root.rglob("*.jpg"))[: sizes.curl_files]]
    phase = Phase.start(emulator, len(paths))
    curl_s = curl_loop(bench, emulator.endpoint, paths, sizes.concurrency)
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


# -- 3. scale -------------------------------------------------------------------------------


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

    store = await Store.open(db_url)
    try:
        job = await store.ensure_job(job_name, create=True)
        stats = ScanStats()
        with profiled(profile):
            started = time.perf_counter()
            await scan_into(store, job, [str(root)], Filter(DEFAULT_INCLUDE), stats)
            seconds = time.perf_counter() - started
        return stats.queued, seconds
    finally:
        await store.close()


async def time_summaries(db_url: str, job_name: str, repeats: int) -> list[float]:
    """Seconds of each `Store.summaries(job)`, the query behind `status`, on one open store."""
    from pipeline.store import Store

    store = await Store.open(db_url)
    try:
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            (summary,) = await store.summaries(job_name)
            seconds.append(time.perf_counter() - started)
        assert summary.total > 0
        return seconds
    finally:
        await store.close()


def wait_for_first_call(child: Child, emulator: Emulator, calls_before: int) -> float:
    """Seconds from the process's spawn until the emulator has seen a call from it."""
    deadline = time.monotonic() + 120
    while emulator.stats()["calls"] <= calls_before:
        if not child.running or time.monotonic() > deadline:
            child.kill()
            raise BenchError(f"resume: no call; {child.output.read_text()[-800:]}")
        time.sleep(STATS_POLL_S)
    return time.perf_counter() - child.started


def measure_scale(bench: Bench) -> None:
    sizes, m = bench.sizes, "scale"
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

    measure_rss(bench)


def measure_rss(bench: Bench) -> None:
    sizes, m = bench.sizes, "scale"
    tree = bench.tree(max(sizes.files, sizes.rss_large), distinct=False)
    emulator = bench.emulator()
    runs = []
    for count in (sizes.rss_small, sizes.rss_large):
        leaves = tree.leaves_for(count)
        images = min(len(leaves) * FILES_PER_FOLDER, tree.files)
        db_url = bench.sqlite_url(f"rss-{count}")
        run = bench.run_job(db_url, emulator, leaves, rate=UNPACED_RATE_PER_S, expect=images)
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


# -- 4. PostgreSQL --------------------------------------------------------------------------


def measure_postgres(bench: Bench) -> None:
    sizes, m = bench.sizes, "postgres"
    try:
        asyncio.run(pg_execute(bench.postgres_url, "SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"[{m}] SKIP: cannot reach {bench.postgres_url}: {exc}", flush=True)
        return
    pg_url = bench.postgres_database()

    tree = bench.tree(sizes.images, distinct=True)
    emulator = bench.emulator()
    runs = {}
    for label, db_url in (("SQLite", bench.sqlite_url("sqlite")), ("PostgreSQL", pg_url)):
        run = bench.run_job(
            db_url, emulator, [tree.root], rate=UNPACED_RATE_PER_S, expect=tree.files
        )
        runs[label] = run
        bench.figure(
            m,
            f"run on {label}",
            run.describe(),
            run.per_s,
        )
    ratio = runs["PostgreSQL"].per_s / runs["SQLite"].per_s
    steady = runs["PostgreSQL"].per_s_after_startup / runs["SQLite"].per_s_after_startup
    bench.figure(
        m,
        "PostgreSQL / SQLite",
        f"{ratio:.2f} ({steady:.2f} after start-up)",
        ratio,
        target=f">= {TARGETS['postgres_vs_sqlite']:g}",
        passed=ratio >= TARGETS["postgres_vs_sqlite"],
    )


MEASUREMENTS: dict[str, Callable[[Bench], None]] = {
    "rate": measure_rate,
    "overhead": measure_overhead,
    "scale": measure_scale,
    "postgres": measure_postgres,
}


# -- command line ---------------------------------------------------------------------------


def machine() -> str:
    pg = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError, AttributeError):
        psql = subprocess.run(["psql", "--version"], capture_output=True, text=True, timeout=10)
        pg = re.search(r"\d+(\.\d+)+", psql.stdout).group(0)  # type: ignore[union-attr]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MB / 1024
    return (
        f"{os.cpu_count()} CPUs, {memory:.0f} GiB RAM, Python {sys.version.split()[0]}, "
        f"SQLite {sqlite3.sqlite_version}, aiohttp {aiohttp.__version__}, psql {pg}"
    )


def quiet_machine(wait_s: float) -> str:
    """How busy the machine is before we start, waiting up to `wait_s` for it to calm down:
    another process's load slows every figure here."""
    deadline = time.monotonic() + wait_s
    while True:
        before = machine_busy_s()
        time.sleep(1.0)
        busy = (machine_busy_s() - before) / (os.cpu_count() or 1)
        if busy < QUIET_BUSY or time.monotonic() >= deadline:
            break
    warning = "" if busy < QUIET_BUSY else "; WARNING: other processes compete for the CPUs"
    return f"machine {busy:.0%} busy over 1 s, load average {os.getloadavg()[0]:.2f}{warning}"


def run_measurements(names: Sequence[str], options: dict[str, Any]) -> None:
    quick = options.pop("quick")
    sizes = QUICK if quick else FULL
    sizes = replace(sizes, **{k: v for k, v in options.items() if k in SIZE_KEYS and v})
    base = options["workdir"] or tempfile.gettempdir()
    workdir = Path(tempfile.mkdtemp(prefix="platepipe-bench-", dir=base))
    bench = Bench(workdir, sizes, check_loopback(options["postgres_url"]))
    if options["profile"]:
        bench.profile_dir = Path(options["profile"]).resolve()
        bench.profile_dir.mkdir(parents=True, exist_ok=True)
        print(f"[bench] profiling into {bench.profile_dir}: timings are slower", flush=True)
    errors = 0
    print(f"[bench] machine: {machine()}", flush=True)
    print(f"[bench] before start: {quiet_machine(options['wait_quiet'])}", flush=True)
    print(f"[bench] sizes: {asdict(sizes)}{' (quick)' if quick else ''}", flush=True)
    started = time.perf_counter()
    try:
        for name in names:
            try:
                MEASUREMENTS[name](bench)
            except BenchError as exc:
                errors += 1
                print(f"[{name}] ERROR: {exc}", flush=True)
    finally:
        bench.close()
    print(f"[bench] finished in {time.perf_counter() - started:.1f}s", flush=True)
    verdicts = [f for f in bench.figures if f.passed is not None]
    failed = [f for f in verdicts if not f.passed]
    print(f"[bench] {len(verdicts) - len(failed)} of {len(verdicts)} targets hold", flush=True)
    if options["json_path"]:
        document = {"machine": machine(), "sizes": asdict(sizes), "quick": quick}
        document["figures"] = [asdict(f) for f in bench.figures]
        Path(options["json_path"]).write_text(json.dumps(document, indent=2) + "\n")
    if errors or (options["strict"] and failed):
        sys.exit(1)


SIZE_KEYS = frozenset(f.name for f in Sizes.__dataclass_fields__.values())


def common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--quick", is_flag=True, help="Tiny sizes: seconds, not minutes."),
        click.option(
            "--concurrency", type=click.IntRange(1), help="Requests in flight (default 16)."
        ),
        click.option("--workdir", type=click.Path(file_okay=False), help="Where temp files go."),
        click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Figures."),
        click.option("--strict", is_flag=True, help="Exit 1 when a target does not hold."),
        click.option(
            "--profile",
            type=click.Path(file_okay=False),
            help="Profile every `platepipe run` with py-spy (and the scan with pyinstrument) "
            "into this folder; slows the figures down.",
        ),
        click.option(
            "--wait-quiet",
            type=click.FloatRange(min=0),
            default=0,
            help="Wait up to this many seconds for other processes to leave the CPUs idle.",
        ),
        click.option(
            "--postgres-url",
            default=default_postgres_url(),
            show_default=True,
            help="A PostgreSQL server on 127.0.0.1; the bench makes and drops its own database.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


rate_options = [
    click.option("--rate", "rate_per_s", type=click.FloatRange(min=1), help="Calls/s (40)."),
    click.option("--duration", "duration_s", type=click.FloatRange(min=1), help="Seconds (30)."),
]
images_option = click.option("--images", type=click.IntRange(1), help="Images (10000).")
curl_option = click.option("--curl-files", type=click.IntRange(1), help="Files for curl (500).")
scale_options = [
    click.option("--files", type=click.IntRange(1), help="Files in the tree (1000000)."),
    click.option("--rss-small", type=click.IntRange(1), help="Images of the small run (20000)."),
    click.option("--rss-large", type=click.IntRange(1), help="Images of the large run (200000)."),
]


def with_options(*decorators: Callable[..., Any]) -> Callable[..., Any]:
    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            command = decorator(command)
        return common_options(command)

    return apply


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Measure platepipe against the targets of issue 5; every server runs on 127.0.0.1."""


@cli.command()
@with_options(*rate_options)
def rate(**options: Any) -> None:
    """Rate fidelity: `run --rate 40` against an emulator refusing past 40 calls a second."""
    run_measurements(["rate"], options)


@cli.command()
@with_options(images_option, curl_option)
def overhead(**options: Any) -> None:
    """Images/s of a bare aiohttp loop, `platepipe run` on SQLite and `xargs -P 16 curl`."""
    run_measurements(["overhead"], options)


@cli.command()
@with_options(*scale_options)
def scale(**options: Any) -> None:
    """Scan + enqueue of a big tree, `status` and resume on it, peak RSS of a small and a
    large run."""
    run_measurements(["scale"], options)


@cli.command()
@with_options(images_option)
def postgres(**options: Any) -> None:
    """Images/s of `platepipe run` on PostgreSQL and on SQLite, same files, same emulator."""
    run_measurements(["postgres"], options)


@cli.command("all")
@with_options(*rate_options, images_option, curl_option, *scale_options)
def all_(**options: Any) -> None:
    """Every measurement, one after another."""
    run_measurements(list(MEASUREMENTS), options)


def main() -> None:
    # A SIGTERM unwinds like Ctrl-C, so that the servers and files this run made go too.
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    cli()


if __name__ == "__main__":
    main()
