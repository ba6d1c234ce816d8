"""`python -m scripts.bench MEASUREMENT [options]`: one command per measurement, and `all`."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import click
from sqlalchemy.engine import make_url

from scripts.bench import auto, dedupe, fit, overhead, postgres, rate, scale, workers
from scripts.bench.common import FULL, QUICK, SIZE_KEYS, Bench
from scripts.bench.probes import MB, BenchError, machine_busy_s

MEASUREMENTS: dict[str, ModuleType] = {
    module.NAME: module for module in (rate, auto, overhead, scale, postgres, workers, fit, dedupe)
}
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_URL_ENVS = ("PLATEPIPE_BENCH_POSTGRES_URL", "PLATEPIPE_TEST_POSTGRES_URL")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", ""})
QUIET_BUSY = 0.10  # the machine counts as quiet below this fraction of its CPUs busy

# Every size a measurement reads, by its Sizes field; each measurement names its own (SIZES).
SIZE_OPTIONS = {
    "rate_per_s": click.option(
        "--rate", "rate_per_s", type=click.FloatRange(min=1), help="Calls/s (40)."
    ),
    "duration_s": click.option(
        "--duration", "duration_s", type=click.FloatRange(min=1), help="Seconds (30)."
    ),
    "images": click.option("--images", type=click.IntRange(1), help="Images (10000)."),
    "curl_files": click.option(
        "--curl-files", type=click.IntRange(1), help="Files for curl (500)."
    ),
    "files": click.option("--files", type=click.IntRange(1), help="Files in the tree (1000000)."),
    "rss_small": click.option(
        "--rss-small", type=click.IntRange(1), help="Images of the small run (20000)."
    ),
    "rss_large": click.option(
        "--rss-large", type=click.IntRange(1), help="Images of the large run (200000)."
    ),
    "worker_images": click.option(
        "--worker-images", type=click.IntRange(1), help="Images of the workers' job (800)."
    ),
    "worker_latency_s": click.option(
        "--worker-latency",
        "worker_latency_s",
        type=click.FloatRange(min=0),
        help="API latency in seconds for the workers (0.2).",
    ),
    "worker_concurrency": click.option(
        "--worker-concurrency", type=click.IntRange(1), help="Requests in flight a worker (2)."
    ),
}


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


def default_postgres_url() -> str:
    named = (os.environ[e] for e in POSTGRES_URL_ENVS if os.environ.get(e))
    return next(named, DEFAULT_POSTGRES_URL)


def check_loopback(url: str) -> str:
    """The PostgreSQL URL, if it names this machine: the bench sends nothing elsewhere."""
    host = make_url(url).host or ""
    if host not in LOOPBACK_HOSTS and not host.startswith("127."):
        raise click.BadParameter(f"{host!r} is not this machine: give a 127.0.0.1 URL")
    return url


def make_bench(options: dict[str, Any]) -> Bench:
    """The Bench for these command-line options: sizes, workdir, PostgreSQL, profiling."""
    quick = options.pop("quick")
    sizes = QUICK if quick else FULL
    sizes = replace(sizes, **{k: v for k, v in options.items() if k in SIZE_KEYS and v is not None})
    base = options["workdir"] or tempfile.gettempdir()
    workdir = Path(tempfile.mkdtemp(prefix="platepipe-bench-", dir=base))
    bench = Bench(workdir, sizes, check_loopback(options["postgres_url"]))
    if options["profile"]:
        bench.profile_dir = Path(options["profile"]).resolve()
        bench.profile_dir.mkdir(parents=True, exist_ok=True)
        print(f"[bench] profiling into {bench.profile_dir}: timings are slower", flush=True)
    print(f"[bench] machine: {machine()}", flush=True)
    print(f"[bench] before start: {quiet_machine(options['wait_quiet'])}", flush=True)
    print(f"[bench] sizes: {asdict(sizes)}{' (quick)' if quick else ''}", flush=True)
    return bench


def run_measurements(names: Sequence[str], options: dict[str, Any]) -> None:
    quick = options["quick"]
    bench = make_bench(options)
    errors = 0
    started = time.perf_counter()
    try:
        for name in names:
            try:
                MEASUREMENTS[name].measure(bench)
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
        document = {"machine": machine(), "sizes": asdict(bench.sizes), "quick": quick}
        document["figures"] = [asdict(f) for f in bench.figures]
        Path(options["json_path"]).write_text(json.dumps(document, indent=2) + "\n")
    if errors or (options["strict"] and failed):
        sys.exit(1)


def common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--quick", is_flag=True, help="Tiny sizes: seconds, not minutes."),
        click.option(
            "--concurrency",
            type=click.IntRange(1),
            help="Requests in flight the rate, overhead and postgres runs pin (16); "
            "`auto` runs without it, as --concurrency auto.",
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


def measurement_command(name: str, help_text: str, sizes: Sequence[str]) -> click.Command:
    """The command running the measurements `name` (or every one, for `all`)."""
    names = list(MEASUREMENTS) if name == "all" else [name]

    def command(**options: Any) -> None:
        run_measurements(names, options)

    for size in reversed(list(dict.fromkeys(sizes))):
        command = SIZE_OPTIONS[size](command)
    return click.command(name, help=help_text)(common_options(command))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Measure platepipe against the targets of issues 5 and 6; every server runs on 127.0.0.1.

    Run from the repository root, e.g. `python -m scripts.bench all --quick`.
    """


for _module in MEASUREMENTS.values():
    _help = (_module.__doc__ or "").split("\n\n")[0]
    cli.add_command(measurement_command(_module.NAME, _help, _module.SIZES))
cli.add_command(
    measurement_command(
        "all",
        "Every measurement, one after another.",
        [size for module in MEASUREMENTS.values() for size in module.SIZES],
    )
)


def main() -> None:
    # A SIGTERM unwinds like Ctrl-C, so that the servers and files this run made go too.
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    cli()
