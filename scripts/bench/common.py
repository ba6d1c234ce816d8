"""What every measurement shares: sizes, targets, figures, and `Bench`, which starts the servers
and processes of one bench run, makes its files and databases, and removes them all at the end.

The emulator process, the scratch PostgreSQL databases and platepipe's environment come from
tests/support, the same helpers the test fixtures use.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from scripts.bench.files import Tree, make_tree
from scripts.bench.probes import BenchError, Child, Finished, Phase, Run, db_counts, profile_summary
from tests.support.cli import environment
from tests.support.emulator import Emulator, start_emulator
from tests.support.postgres import create_database, drop_database, execute

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
APP_KEY = "bench-app-key"
SECRET_KEY = "bench-secret-key"
LOOPBACK = "127.0.0.1"

UNPACED_RATE_PER_S = 1_000_000  # `run --rate` when the pipeline should not pace at all
SAFETY_FACTOR = 10  # a run may take this many times its expected time before it is killed
MIN_RUN_TIMEOUT_S = 120.0
PROFILE_RATE_HZ = 200
PROFILE_TOP_FRAMES = 15


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
    worker_images: int = 800
    worker_latency_s: float = 0.2
    worker_concurrency: int = 2  # per `work` process


FULL = Sizes()
QUICK = Sizes(
    duration_s=2.0,
    images=150,
    curl_files=20,
    files=2_000,
    rss_small=200,
    rss_large=1_000,
    worker_images=16,
    worker_latency_s=0.05,
)
SIZE_KEYS = frozenset(Sizes.__dataclass_fields__)

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
    "workers_4_vs_1": 3.0,
}


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


@dataclass
class Bench:
    workdir: Path
    sizes: Sizes
    postgres_url: str
    figures: list[Figure] = field(default_factory=list)
    profile_dir: Path | None = None  # --profile: py-spy and pyinstrument profiles go here
    _emulators: dict[tuple[str, int], Emulator] = field(default_factory=dict)
    _children: list[Child] = field(default_factory=list)
    _databases: list[str] = field(default_factory=list)
    _trees: dict[tuple[int, bool], Tree] = field(default_factory=dict)
    _profiles: list[Path] = field(default_factory=list)
    _counter: int = 0

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

    def postgres_reachable(self, measurement: str) -> bool:
        """Whether the PostgreSQL server answers; if not, the measurement says it skips."""
        try:
            asyncio.run(execute(self.postgres_url, "SELECT 1"))
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            print(f"[{measurement}] SKIP: cannot reach {self.postgres_url}: {exc}", flush=True)
            return False
        return True

    def postgres_database(self) -> str:
        """A new, empty PostgreSQL database on the server; dropped by `close`."""
        name, url = create_database(self.postgres_url, "platepipe_bench_")
        self._databases.append(name)
        return url

    def close(self) -> None:
        """Stop every process, drop every database and remove every file this run made."""
        for child in self._children:
            if child.running:
                child.kill()
        for emulator in self._emulators.values():
            emulator.stop()
        for name in self._databases:
            with contextlib.suppress(Exception):
                drop_database(self.postgres_url, name)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def print_profile(self) -> None:
        """With --profile: where the last profiled run spent its samples."""
        while self._profiles:
            path = self._profiles.pop()
            if path.exists():
                print(f"[profile] {path}", flush=True)
                for line in profile_summary(path.read_text(), PROFILE_TOP_FRAMES):
                    print(f"[profile]   {line}", flush=True)

    def env(self) -> dict[str, str]:
        """platepipe's environment, with this checkout first on the path, installed or not."""
        env = environment(APP_KEY, SECRET_KEY)
        pythonpath = [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
        return {**env, "PYTHONPATH": os.pathsep.join(pythonpath)}

    def emulator(self, *, latency: str = "0", rate_limit: int = 0) -> Emulator:
        """The emulator on 127.0.0.1 with these settings, started once per bench run."""
        key = (latency, rate_limit)
        if key not in self._emulators:
            args = ["--host", LOOPBACK, "--latency", latency, "--rate-limit", str(rate_limit)]
            with open(self.path("emulator.log"), "w") as log:
                try:
                    emulator = start_emulator(*args, env=self.env(), cwd=self.workdir, log=log)
                except RuntimeError as exc:
                    raise BenchError(str(exc)) from None
            self._emulators[key] = emulator
        return self._emulators[key]

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
                command, stdout=out, stderr=subprocess.STDOUT, env=self.env(), cwd=self.workdir
            )
        child = Child(process, output, started, wall_started)
        self._children.append(child)
        return child

    def platepipe(self, *args: str, timeout_s: float = MIN_RUN_TIMEOUT_S) -> Finished:
        return self.start(*args).wait(timeout_s)

    def run_job(
        self,
        db_url: str,
        emulator: Emulator,
        roots: Sequence[Path],
        *,
        rate: float,
        expect: int,
        options: Sequence[str] = (),
        pin: bool = True,
    ) -> Run:
        """`platepipe run` over `roots` into a new job; checks every image ended `done`.
        `pin`: with `--concurrency` (the sizes'), else as its default (auto)."""
        job = f"bench-{uuid.uuid4().hex[:8]}"
        expected_s = expect / min(rate, 100.0) + 30  # 100/s: slower than any run seen
        timeout_s = max(MIN_RUN_TIMEOUT_S, expected_s * SAFETY_FACTOR)
        args = ["run", "--job", job, *map(str, roots), "--db", db_url]
        args += ["--endpoint", emulator.url, "--rate", f"{rate:g}", "--quiet"]
        if pin:
            args += ["--concurrency", str(self.sizes.concurrency)]
        args += ["--max-duration", f"{timeout_s:.0f}"]  # a second stop, should ours fail
        args += options
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
