"""Progress while a job goes: the live panel on a terminal keeps log records above it (never
glued to it) and shows how to stop; `work` reports what is left of the whole job."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import subprocess
import sys
import time

from sqlalchemy import text

from pipeline.progress import STOP_HINT
from pipeline.store import Store
from tests.support.cli import platepipe, start_platepipe
from tests.support.corpus import make_image
from tests.support.db import query

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_warnings_print_above_the_live_panel_and_the_stop_hint_shows(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    for n in range(30):
        make_image(root / f"s{n:02d}.jpg", 64, 48, "JPEG", seed=n)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}
    master, terminal = pty.openpty()  # stderr on a terminal: the live panel
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", "--job", "J", str(root), "--rate", "5",
             "--concurrency", "1", "--max-duration", "2.5"],
            stdout=subprocess.PIPE, stderr=terminal, env=env,
        )  # fmt: skip
    finally:
        os.close(terminal)
    shown = b""
    while chunk := _read(master):
        shown += chunk
    os.close(master)
    run.communicate(timeout=60)

    assert run.returncode == 3
    # What stays on each terminal line: the text after its last carriage return.
    lines = [ANSI.sub("", line).split("\r")[-1] for line in shown.decode().split("\r\n")]
    (warning,) = [line for line in lines if "WARNING stopping" in line]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ WARNING stopping", warning), warning
    assert "ETA" in shown.decode() and STOP_HINT in lines


def execute(url: str, sql: str) -> None:
    async def run() -> None:
        async with (
            Store.connect(url, migrate=False) as store,
            store.engine.begin() as connection,
        ):
            await connection.execute(text(sql))

    asyncio.run(run())


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # the other end closed: the run is over
        return b""


def test_work_progress_counts_what_is_left_of_the_job(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    for n in range(40):
        make_image(root / f"s{n:02d}.jpg", 64, 48, "JPEG", seed=n)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}
    assert platepipe("scan", "--job", "J", str(root), env=env).returncode == 0
    work = start_platepipe(
        "work", "--job", "J", "--rate", "4", "--concurrency", "1", "--progress-every", "0.3",
        env=env,
    )  # fmt: skip
    try:
        while not query(sqlite_url, "SELECT 1 FROM items WHERE status = 'done'"):
            assert work.poll() is None
            time.sleep(0.2)
        # Another process finishes the rest of the job meanwhile (as another worker would).
        execute(sqlite_url, "UPDATE items SET status = 'done' WHERE status = 'pending'")
        out, err = work.communicate(timeout=60)
    finally:
        if work.poll() is None:
            work.kill()
            work.communicate()

    assert work.returncode == 0, out + err
    progress = [line for line in err.splitlines() if " left " in line]
    assert progress, err
    assert not any("scanned" in line for line in progress), progress
    last_left = int(re.search(r" left (\d+)", progress[-1])[1])
    assert last_left <= 10, progress  # the items it holds, not its own count from the start
