"""Unit tests of the pre-flight checks (pipeline/preflight.py) on real files: magic bytes,
sizes, what is not a regular file, and the daemon threads that read."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from pipeline.preflight import (
    JPEG_MAGIC,
    MAX_IMAGE_BYTES,
    PNG_MAGIC,
    DaemonThreads,
    in_daemon_thread,
    read_checked,
    sniff_type,
)
from pipeline.records import Checked

# --- sniff_type -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (JPEG_MAGIC + b"\xe0\x00\x10JFIF", ("image.jpg", "image/jpeg")),
        (b"\xff\xd8\xff", ("image.jpg", "image/jpeg")),
        (PNG_MAGIC, ("image.png", "image/png")),
        (PNG_MAGIC + b"\x00\x00\x00\rIHDR", ("image.png", "image/png")),
        (b"\xff\xd8", None),
        (b"\x89PNG\r\n", None),
        (b"GIF89a", None),
        (b"RIFF\x00\x00WEBP", None),
        (b"hello, world", None),
        (b"", None),
    ],
)
def test_sniff_type_by_magic_bytes(head: bytes, expected: tuple[str, str] | None) -> None:
    assert sniff_type(head) == expected


# --- read_checked ---------------------------------------------------------------------------


async def test_read_checked_returns_a_jpeg_s_bytes(tmp_path: Path) -> None:
    data = JPEG_MAGIC + b"rest of the image"
    (tmp_path / "a.jpg").write_bytes(data)

    result = await read_checked(str(tmp_path / "a.jpg"))

    assert result.data == data


async def test_read_checked_returns_a_png_s_bytes(tmp_path: Path) -> None:
    data = PNG_MAGIC + b"rest of the image"
    (tmp_path / "a.png").write_bytes(data)

    assert (await read_checked(str(tmp_path / "a.png"))).data == data


async def test_read_checked_accepts_exactly_the_size_limit(tmp_path: Path) -> None:
    data = JPEG_MAGIC + b"\0" * (MAX_IMAGE_BYTES - len(JPEG_MAGIC))
    (tmp_path / "a.jpg").write_bytes(data)

    result = await read_checked(str(tmp_path / "a.jpg"))

    assert len(result.data) == MAX_IMAGE_BYTES


async def test_read_checked_refuses_a_file_over_the_size_limit(tmp_path: Path) -> None:
    (tmp_path / "big.jpg").write_bytes(JPEG_MAGIC + b"\0" * (MAX_IMAGE_BYTES - 2))

    reason, message = await read_checked(str(tmp_path / "big.jpg"))

    assert reason == "too_large"
    assert message


async def test_read_checked_refuses_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")

    reason, _message = await read_checked(str(tmp_path / "empty.jpg"))

    assert reason == "empty"


@pytest.mark.parametrize(
    "data", [b"just some text\n", b"GIF89a....", b"\xff\xd8"], ids=["text", "gif", "short-jpeg"]
)
async def test_read_checked_refuses_what_is_not_jpeg_or_png(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "fake.jpg").write_bytes(data)

    reason, _message = await read_checked(str(tmp_path / "fake.jpg"))

    assert reason == "not_image"


async def test_read_checked_reports_a_vanished_file_as_missing(tmp_path: Path) -> None:
    reason, _message = await read_checked(str(tmp_path / "gone.jpg"))

    assert reason == "missing"


async def test_read_checked_refuses_a_directory(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").mkdir()

    reason, _message = await read_checked(str(tmp_path / "x.jpg"))

    assert reason == "not_image"


async def test_read_checked_gives_the_size_and_mtime_the_bytes_were_read_at(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(JPEG_MAGIC + b"the frame")
    os.utime(path, (1_700_000_000.5, 1_700_000_000.5))

    result = await read_checked(str(path))

    data = JPEG_MAGIC + b"the frame"
    assert result == Checked(data, 12, 1_700_000_000.5, hashlib.sha256(data).hexdigest())


async def test_read_checked_follows_a_symlink_to_an_image(tmp_path: Path) -> None:
    (tmp_path / "target.jpg").write_bytes(JPEG_MAGIC + b"x")
    (tmp_path / "link.jpg").symlink_to(tmp_path / "target.jpg")

    result = await read_checked(str(tmp_path / "link.jpg"))

    assert result.data == JPEG_MAGIC + b"x"


async def test_read_checked_refuses_a_fifo_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "x.jpg")  # a blocking open would wait for a writer forever

    reason, message = await asyncio.wait_for(read_checked(str(tmp_path / "x.jpg")), 5)

    assert reason == "not_image"
    assert "FIFO" in message


async def test_read_checked_checks_what_it_opened_not_only_the_name(tmp_path, monkeypatch):
    # A FIFO swapped in between the look at the name and the open: the open must not block,
    # and what was opened is refused.
    regular = tmp_path / "regular.jpg"
    regular.write_bytes(JPEG_MAGIC + b"x")
    os.mkfifo(tmp_path / "x.jpg")
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, **kw: real_stat(regular))

    reason, message = await asyncio.wait_for(read_checked(str(tmp_path / "x.jpg")), 5)

    assert (reason, message) == ("not_image", "a FIFO, not a regular file")


async def test_read_checked_refuses_a_socket(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(tmp_path / "s.jpg"))
        reason, _message = await asyncio.wait_for(read_checked(str(tmp_path / "s.jpg")), 5)

    assert reason in ("not_image", "unreadable")  # Linux refuses to open a socket at all


async def test_read_checked_refuses_a_device() -> None:
    reason, message = await asyncio.wait_for(read_checked("/dev/zero"), 5)

    assert (reason, message) == ("not_image", "a device, not a regular file")


async def test_in_daemon_thread_hands_back_results_and_errors() -> None:
    assert await in_daemon_thread(lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        await in_daemon_thread(lambda: 1 / 0)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a chmod 000 file")
async def test_read_checked_reports_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.jpg"
    path.write_bytes(JPEG_MAGIC + b"data")
    path.chmod(0)
    try:
        reason, _message = await read_checked(str(path))
    finally:
        path.chmod(0o644)

    assert reason == "unreadable"


def test_daemon_threads_run_every_job_and_one_stuck_job_holds_up_no_other() -> None:
    pool = DaemonThreads(4, "test")
    never, done, lock = threading.Event(), [], threading.Lock()

    def job(n: int) -> None:
        with lock:
            done.append(n)

    pool.submit(never.wait)  # stuck for good, as on a hung mount
    for n in range(200):
        pool.submit(lambda n=n: job(n))
    deadline = time.monotonic() + 10
    while len(done) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)

    assert sorted(done) == list(range(200))
    never.set()


async def test_read_checked_hashes_the_bytes_it_read_and_what_it_refuses_after_reading(
    tmp_path: Path,
) -> None:
    data = PNG_MAGIC + b"a picture"
    (tmp_path / "a.png").write_bytes(data)
    (tmp_path / "notes.jpg").write_bytes(b"just some text\n")

    read = await read_checked(str(tmp_path / "a.png"))
    refused = await read_checked(str(tmp_path / "notes.jpg"))
    gone = await read_checked(str(tmp_path / "gone.jpg"))

    assert read.sha256 == hashlib.sha256(data).hexdigest()
    assert refused.sha256 == hashlib.sha256(b"just some text\n").hexdigest()
    assert gone.sha256 is None  # nothing was read
