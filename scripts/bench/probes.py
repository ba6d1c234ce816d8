"""What a measurement reads: a `platepipe` child's wall time and peak RSS, CPU seconds per
image (client, emulator, the rest of the machine), the calls' window in the attempts table,
and py-spy's samples."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.db import query
from tests.support.emulator import Emulator

MB = 1024 * 1024


class BenchError(Exception):
    """A measurement could not be taken (a process failed, a server did not start, ...)."""


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
        args = [str(arg) for arg in self.process.args]  # type: ignore[union-attr]
        return "platepipe " + " ".join(args[args.index("pipeline") + 1 :][:2])


def successes(emulator: Emulator, stats: dict[str, Any] | None = None) -> int:
    """Answers that were an image's own: its plate (0) or none (4000201)."""
    by_code = (stats or emulator.stats())["by_code"]
    return by_code.get("0", 0) + by_code.get("4000201", 0)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds the machine spent not idle since boot, every CPU (Linux /proc/stat)."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


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
        return cls(machine_busy_s(), process_cpu_s(emulator.process.pid), client)

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
        done = successes(emulator)  # before the CPU snapshot: this request costs CPU too
        return cls(emulator, images, done, Cpu.now(emulator))

    def end(self, wall_s: float) -> None:
        assert self.before is not None
        after = Cpu.now(self.emulator)
        self.cpu_text = after.text(self.before, self.images, wall_s)
        self.client_ms = after.client_ms(self.before, self.images)
        self.successes = successes(self.emulator) - self.successes

    def check(self, what: str) -> None:
        """After `end`: BenchError unless every image got its one success."""
        if self.successes != self.images:
            raise BenchError(f"{what}: {self.successes} successes for {self.images} images")


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
    counts = dict(query(url, "SELECT status, count(*) FROM items GROUP BY status"))
    window = "SELECT count(*), min(started_at), max(started_at) FROM attempts"
    ((count, first, last),) = query(url, window)
    return counts, CallWindow(count, _epoch(first), _epoch(last))


def _epoch(stamp: datetime | str | None) -> float:
    """The store's naive-UTC times as epoch seconds."""
    if stamp is None:
        return 0.0
    if isinstance(stamp, str):
        stamp = datetime.fromisoformat(stamp)
    return stamp.replace(tzinfo=UTC).timestamp()


@dataclass
class Run:
    """A `platepipe run` that ended well, with what was measured around it."""

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
