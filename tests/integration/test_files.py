"""Files on disk as they really behave: changed between the scan and the read, replaced by a
FIFO, stuck in a read, or named so that two of them could be taken for one. `platepipe` as a
subprocess, the emulator as a real server, a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import EXIT_OK, EXIT_STOPPED
from tests.support.cli import platepipe
from tests.support.corpus import make_image, sha256_file
from tests.support.db import query

STOP_WITHIN_S = 15


def _tree(root: Path, count: int) -> list[Path]:
    paths = [root / f"cam{n % 2}" / f"frame {n:03d}.jpg" for n in range(count)]
    for n, path in enumerate(paths):
        make_image(path, 64, 48, "JPEG", seed=n)
    return paths


def _item(url: str, path: Path) -> tuple:
    (row,) = query(
        url, "SELECT status, error_code, size, mtime FROM items WHERE path = :p", p=str(path)
    )
    return row


def test_a_file_changed_between_scan_and_read_is_paid_for_once(
    tmp_path, db_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    paths = _tree(root, 4)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
    assert platepipe("scan", "--job", "j", str(root), env=env).returncode == EXIT_OK
    # The camera finishes writing after the scan: other bytes, another size and mtime.
    changed = paths[0]
    make_image(changed, 96, 64, "JPEG", seed=100)
    os.utime(changed, (1_700_000_000, 1_700_000_000))

    first = platepipe("run", "--job", "j", env=env)

    assert first.returncode == EXIT_OK, first.stderr
    stats = emulator.stats()
    assert stats["calls"] == len(paths)
    assert stats["by_sha256"][sha256_file(changed)] == 1  # the new bytes were sent
    st = changed.stat()
    status, _code, size, mtime = _item(db_url, changed)
    assert (status, size, mtime) == ("done", st.st_size, st.st_mtime)

    again = platepipe("run", "--job", "j", str(root), env=env)

    assert again.returncode == EXIT_OK, again.stderr
    assert emulator.stats()["calls"] == len(paths)  # the unchanged tree: nothing sent


def test_a_fifo_swapped_in_after_the_scan_is_skipped_and_the_run_ends(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    paths = _tree(root, 3)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}
    assert platepipe("scan", "--job", "j", str(root), env=env).returncode == EXIT_OK
    fifo = paths[1]
    fifo.unlink()
    os.mkfifo(fifo)  # no writer ever comes: opening it to read without O_NONBLOCK would hang

    done = platepipe("run", "--job", "j", env=env, timeout=120)

    assert done.returncode == EXIT_OK, done.stderr
    assert emulator.stats()["calls"] == len(paths) - 1
    status, code, _size, _mtime = _item(sqlite_url, fifo)
    assert (status, code) == ("skipped", "not_image")
    message = query(sqlite_url, "SELECT error_message FROM items WHERE path = :p", p=str(fifo))
    assert "FIFO" in message[0][0]


# `platepipe run`, with every file read stuck for good, as on a hung NFS mount: the read
# announces itself in a marker file, then blocks its thread forever.
_STUCK_READS = """
import sys, threading
from pathlib import Path
import pipeline.preflight

marker = Path(sys.argv[1])

def stuck(path, *limit):
    marker.touch()
    threading.Event().wait()

pipeline.preflight._read_head = stuck
sys.argv = ["platepipe", *sys.argv[2:]]
from pipeline.cli import main
main()
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_one_signal_ends_a_run_whose_reads_are_stuck(
    tmp_path, sqlite_url, start_emulator, platepipe_env, signum
):
    root = tmp_path / "archive"
    paths = _tree(root, 2)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}
    marker = tmp_path / "reading"
    run = subprocess.Popen(
        [sys.executable, "-c", _STUCK_READS, str(marker), "run", "--job", "j", str(root)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "no read started"
            time.sleep(0.05)
        run.send_signal(signum)
        _out, err = run.communicate(timeout=STOP_WITHIN_S)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()

    assert run.returncode == EXIT_STOPPED, err
    assert "Traceback" not in err
    assert emulator.stats()["calls"] == 0
    assert {_item(sqlite_url, p)[0] for p in paths} == {"pending"}


def test_a_name_with_an_odd_byte_and_one_with_its_escape_s_text_are_two_items(
    tmp_path, db_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    root.mkdir()
    # `c19` + the byte 0xFF + `.jpg`, and the name that is literally the text `c19\xff.jpg`.
    odd = os.path.join(os.fsencode(root), b"c19\xff.jpg")
    literal = root / "c19\\xff.jpg"
    make_image(Path(os.fsdecode(odd)), 64, 48, "JPEG", seed=1)
    make_image(literal, 64, 48, "JPEG", seed=2)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}

    first = platepipe("run", "--job", "j", str(root), env=env)

    assert first.returncode == EXIT_OK, first.stderr
    stats = emulator.stats()
    assert stats["calls"] == 2
    assert stats["by_sha256"] == {
        sha256_file(Path(os.fsdecode(odd))): 1,
        sha256_file(literal): 1,
    }
    rows = query(db_url, "SELECT path, raw_path, status FROM items")
    items = {path: (bytes(raw) if raw is not None else None, status) for path, raw, status in rows}
    assert items == {
        f"{root}/c19\\xff.jpg": (odd, "done"),
        f"{root}/c19\\\\xff.jpg": (os.fsencode(literal), "done"),
    }

    again = platepipe("run", "--job", "j", str(root), env=env)

    assert again.returncode == EXIT_OK, again.stderr
    assert emulator.stats()["calls"] == 2
