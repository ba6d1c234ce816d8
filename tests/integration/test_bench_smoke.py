"""The benchmarks still run: `python -m scripts.bench all --quick`, every measurement at tiny
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
BENCH_TIMEOUT_S = 300  # a quick run takes ~40 s; room for a loaded CI machine
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
    "workers": ["ratio 4/1"],
    "fit": ["calls", "box error big.png", "box error big.jpg"],
    "dedupe": ["a. ", "b. "],
}
NEEDS_POSTGRES = ("postgres", "workers")
INFO_FIGURES = {
    "overhead": [
        "a. bare aiohttp loop, FormData",
        "a. bare aiohttp loop, one-buffer body",
        "b. platepipe run (SQLite)",
        "c. xargs -P 16 curl",
        "client CPU per image",
    ],
    "scale": ["platepipe status (process wall)", "peak RSS"],
    "workers": ["1 worker", "4 workers", "calls made"],
    "fit": ["fit big.png", "fit big.jpg"],
    "dedupe": ["c. rescan"],
}


@pytest.fixture(scope="module")
def bench_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One quick run of every measurement, shared by the tests of this module."""
    tmp_path = tmp_path_factory.mktemp("bench")
    command = [sys.executable, "-m", "scripts.bench", "all", "--quick"]
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
    skipped = {m for m in NEEDS_POSTGRES if any(line.startswith(f"[{m}] SKIP") for line in lines)}
    if os.environ.get(POSTGRES_URL_ENV):
        assert not skipped, bench_output
    for measurement, names in EXPECTED_FIGURES.items():
        if measurement in skipped:
            continue
        for name in names:
            prefix = f"[{measurement}] {name}"
            found = [line for line in lines if line.startswith(prefix)]
            assert found, f"no {prefix!r} line in:\n{bench_output}"
            assert all(re.search(r"\d", line) for line in found), found
            assert all(re.search(VERDICT, line) for line in found), found
    for measurement, names in INFO_FIGURES.items():
        if measurement in skipped:
            continue
        for name in names:
            assert any(line.startswith(f"[{measurement}] {name}") for line in lines), name
    assert re.search(r"^\[bench\] \d+ of \d+ targets hold$", bench_output, re.MULTILINE)


def test_the_workers_benchmark_makes_one_call_per_image_and_run(bench_output: str) -> None:
    """`workers` (issue 6's figure): 1 then 4 `work` processes on the same images, each image
    called once a run; the figure itself is BENCHMARKS.md's."""
    if "[workers] SKIP" in bench_output:
        pytest.skip("no PostgreSQL for the workers benchmark")
    assert re.search(r"^\[workers\] 1 worker: \d+\.\d images/s", bench_output, re.MULTILINE)
    assert re.search(r"^\[workers\] 4 workers: \d+\.\d images/s", bench_output, re.MULTILINE)
    assert re.search(r"^\[workers\] calls made: 32 for 32 image-runs", bench_output, re.MULTILINE)
    assert re.search(r"^\[workers\] ratio 4/1: \d+\.\d\dx  \(target >= 3\.0x\)", bench_output, re.M)
