"""`platepipe emulator` as a real server process, for the test fixtures and the benchmarks."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

EMULATOR_START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def emulator_argv(*options: str) -> list[str]:
    """`platepipe emulator` with these options: by default it answers like the live service,
    a quarter of images without a plate (4000201)."""
    return [sys.executable, "-m", "pipeline", "emulator", *options]


@dataclass
class Emulator:
    url: str
    process: subprocess.Popen[str]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_emulator/stats", timeout=10) as response:
            return json.load(response)

    def endpoint(self, app_key: str) -> str:
        """The recognition endpoint's URL, as a bare client posts to it."""
        return f"{self.url}/v1.0/appkeys/{app_key}/vehicle-plate"

    def stop(self) -> None:
        stop_process(self.process)


def start_emulator(
    *options: str,
    env: dict[str, str],
    cwd: Path | None = None,
    log: IO[str] | None = None,
    timeout_s: float = EMULATOR_START_TIMEOUT_S,
) -> Emulator:
    """Start `platepipe emulator --port 0 OPTIONS` and return once it listens.

    Its stderr goes to `log` (a file, so a long run cannot fill a pipe), else to a pipe that
    is read only if it fails to start."""
    process = subprocess.Popen(
        emulator_argv("--port", "0", *options),
        stdout=subprocess.PIPE,
        stderr=log if log is not None else subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    line = process.stdout.readline() if ready else ""
    if "listening on" not in line:
        process.kill()
        _, errors = process.communicate()
        raise RuntimeError(f"emulator did not start: {line!r} {errors or ''!r}")
    return Emulator(line.rsplit(" ", 1)[-1].strip(), process)


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; reaped either way."""
    if process.poll() is None:
        process.terminate()
    try:
        process.communicate(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
