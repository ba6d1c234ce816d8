"""How `work` scales across processes: 1 worker against 4 on one PostgreSQL job.

With the API answering in 200 ms and a small per-worker concurrency, throughput is bound by
calls in flight, so N workers should approach N times one. Target (issue 6): 4 workers reach
at least 3x the images/s of one.

    python scripts/bench_workers.py                    # 800 images, the real figure
    python scripts/bench_workers.py --images 40        # a quick look

Traffic goes only to 127.0.0.1 (the bundled emulator); scratch PostgreSQL databases and temp
files are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import asyncpg
from PIL import Image

POSTGRES_URL = os.environ.get(
    "PLATEPIPE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
APP_KEY, SECRET_KEY = "bench-app", "bench-secret"
TARGET_RATIO = 3.0


def make_images(folder: Path, count: int) -> None:
    for n in range(count):
        path = folder / f"cam{n % 4}" / f"{n:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (n % 256, (n // 256) % 256, 7)).save(path, quality=50)


async def admin(statement: str) -> None:
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def platepipe(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def measure(workers: int, images: Path, count: int, env: dict[str, str], concurrency: int):
    database = f"platepipe_bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin(f'CREATE DATABASE "{database}"'))
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{database}"
    env = {**env, "PLATEPIPE_DB": url}
    try:
        subprocess.run(
            [sys.executable, "-m", "pipeline", "scan", "--job", "bench", str(images)],
            env=env,
            check=True,
            capture_output=True,
        )
        args = ("work", "--job", "bench", "--rate", "1000", "--concurrency", str(concurrency))
        started = time.monotonic()
        processes = [platepipe(*args, "--quiet", env=env) for _ in range(workers)]
        for process in processes:
            _, err = process.communicate(timeout=1800)
            if process.returncode != 0:
                raise SystemExit(f"a worker failed ({process.returncode}): {err.decode()[-500:]}")
        elapsed = time.monotonic() - started
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    return count / elapsed, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=2, help="per worker")
    options = parser.parse_args()
    env = {**os.environ, "NHN_OCR_APP_KEY": APP_KEY, "NHN_OCR_SECRET_KEY": SECRET_KEY}
    with tempfile.TemporaryDirectory(prefix="platepipe-bench-") as tmp:
        images = Path(tmp) / "images"
        make_images(images, options.images)
        emulator = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "emulator", "--port", "0",
             "--latency", str(options.latency)],
            env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            url = emulator.stdout.readline().rsplit(" ", 1)[-1].strip()
            env["NHN_OCR_ENDPOINT"] = url
            one, one_s = measure(1, images, options.images, env, options.concurrency)
            four, four_s = measure(4, images, options.images, env, options.concurrency)
            with urllib.request.urlopen(f"{url}/_emulator/stats") as response:
                calls = json.load(response)["calls"]
        finally:
            emulator.terminate()
            emulator.wait(timeout=30)
    ratio = four / one
    print(f"workers: {options.images} images, {options.latency * 1000:.0f} ms API latency, "
          f"concurrency {options.concurrency} per worker")  # fmt: skip
    print(f"  1 worker : {one:7.1f} images/s ({one_s:.1f} s)")
    print(f"  4 workers: {four:7.1f} images/s ({four_s:.1f} s)")
    print(f"  calls made: {calls} for {2 * options.images} image-runs")
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"  ratio 4/1: {ratio:.2f}x (target >= {TARGET_RATIO:.1f}x) {verdict}")


if __name__ == "__main__":
    main()
