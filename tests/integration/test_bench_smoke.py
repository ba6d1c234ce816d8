"""The benchmark script still runs: `scripts/bench.py all --quick`, every measurement at tiny
sizes, as a subprocess. Only that it ends well and prints its figures; timings are BENCHMARKS.md's
business, never a test's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL_ENV

REPO = Path(__file__).resolve().parents[2]
BENCH_TIMEOUT_S = 240  # a quick run takes ~25 s; room for a loaded CI machine
VERDICT = r"\(target [^)]+\)  (PASS|FAIL)$"

# Each measurement's figure lines, as `[measurement] name: figure ... (target ...) PASS|FAIL`.
EXPECTED_FIGURES = {
    "rate": ["sustained rate", "refused"],
    "overhead": [
        "run / bare loop, FormData",
        "run / bare loop, one-buffer body",
        "run / xargs curl",
    ],
    "scale": [
        "scan + enqueue (SQLite)",
        "Store.summaries(job)",
        "resume",
        "peak RSS growth",
    ],
    "postgres": ["PostgreSQL / SQLite"],
}
INFO_FIGURES = {
    "overhead": [
        "a. bare aiohttp loop, FormData",
        "a. bare aiohttp loop, one-buffer body",
        "b. platepipe run (SQLite)",
        "c. xargs -P 16 curl",
        "client CPU per image",
    ],
    "scale": ["platepipe status (process wall)", "peak RSS"],
}


@pytest.fixture
def bench_output(tmp_path: Path) -> str:
    command = [sys.executable, str(REPO / "scripts" / "bench.py"), "all", "--quick"]
    command += ["--workdir", str(tmp_path), "--json", str(tmp_path / "figures.json")]
    postgres_url = os.environ.get(POSTGRES_URL_ENV)
    if postgres_url:
        command += ["--postgres-url", postgres_url]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=BENCH_TIMEOUT_S, cwd=REPO, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Everything it made is gone: servers, databases, files.
    assert [p.name for p in tmp_path.iterdir()] == ["figures.json"]
    return done.stdout


def test_every_measurement_prints_its_figures_and_verdicts(bench_output: str) -> None:
    lines = bench_output.splitlines()
    assert not [line for line in lines if "ERROR" in line], bench_output
    postgres_skipped = any(line.startswith("[postgres] SKIP") for line in lines)
    if os.environ.get(POSTGRES_URL_ENV):
        assert not postgres_skipped, bench_output
    for measurement, names in EXPECTED_FIGURES.items():
        if measurement == "postgres" and postgres_skipped:
            continue
        for name in names:
            prefix = f"[{measurement}] {name}"
            found = [line for line in lines if line.startswith(prefix)]
            assert found, f"no {prefix!r} line in:\n{bench_output}"
            assert all(re.search(r"\d", line) for line in found), found
            assert all(re.search(VERDICT, line) for line in found), found
    for measurement, names in INFO_FIGURES.items():
        for name in names:
            assert any(line.startswith(f"[{measurement}] {name}") for line in lines), name
    assert re.search(r"^\[bench\] \d+ of \d+ targets hold$", bench_output, re.MULTILINE)


def test_the_workers_benchmark_runs(postgres_server_url: str) -> None:
    """`scripts/bench_workers.py` (issue 6's figure) at a tiny size: it ends well and prints
    both throughputs and the ratio; the figure itself is BENCHMARKS.md's."""
    command = [sys.executable, str(REPO / "scripts" / "bench_workers.py")]
    command += ["--images", "16", "--latency", "0.05"]
    env = {**os.environ, POSTGRES_URL_ENV: postgres_server_url}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=BENCH_TIMEOUT_S, cwd=REPO, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"1 worker : +\d+\.\d images/s", done.stdout), done.stdout
    assert re.search(r"4 workers: +\d+\.\d images/s", done.stdout), done.stdout
    assert re.search(r"calls made: 32 for 32 image-runs", done.stdout), done.stdout
    assert re.search(r"ratio 4/1: \d+\.\d\dx \(target >= 3\.0x\) (PASS|FAIL)", done.stdout)
