"""Run `platepipe` as a user's shell or cron job would: a subprocess, output captured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def platepipe(
    *args: str, env: dict[str, str], timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def start_platepipe(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def environment(app_key: str, secret_key: str, **extra: str) -> dict[str, str]:
    """The environment a user's cron job would give platepipe: this one's, without any
    NHN_OCR_ or PLATEPIPE_ setting it may hold, with these keys (and `extra`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NHN_OCR_", "PLATEPIPE_"))}
    return {**env, "NHN_OCR_APP_KEY": app_key, "NHN_OCR_SECRET_KEY": secret_key, **extra}
