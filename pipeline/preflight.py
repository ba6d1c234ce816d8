"""Pre-flight: read an item's file and decide whether the API would take it, before any call.

Only regular files are ever read. The path is looked at first (`stat`), then opened without
blocking (`O_NONBLOCK`: a FIFO opens at once instead of waiting for a writer), and what was
opened is checked again with `fstat` before a byte is read: a FIFO, socket or device swapped
in for an image after the scan is refused, never read. Symlinks are followed: a link to an
image is an image.

The bytes come with the size and mtime of that same `fstat`, so the item records the file as
it was sent, not as the scan saw it: an unchanged tree is never paid for twice.

The bytes are hashed (SHA-256) in the thread that read them, once: what tells a copy of a
picture already recognized (`dedupe.py`) costs no second read.

Reads run in daemon threads (`in_daemon_thread`): a read stuck on a hung network mount holds
up neither the event loop nor the process's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import queue
import stat
import threading
from collections.abc import Callable
from typing import TypeVar

from pipeline.records import Checked

MAX_IMAGE_BYTES = 5 * 1024 * 1024
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
READ_CHUNK_BYTES = 1024 * 1024  # after the first read, which asks for the file's size
# Not O_NOFOLLOW: symlinks to images are legitimate (the scanner enqueues them on purpose).
OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC

T = TypeVar("T")


class Refused(tuple[str, str]):
    """Why a file cannot be sent, (reason, message): no call is spent on it. `sha256`: the
    content's digest when the whole file was read (empty, not an image), else None."""

    sha256: str | None

    def __new__(cls, reason: str, message: str, sha256: str | None = None) -> Refused:
        refused = super().__new__(cls, (reason, message))
        refused.sha256 = sha256
        return refused


# A file's bytes, or why it cannot be sent: no call is spent on it.
Read = Checked | Refused


class NotRegular(OSError):
    """What was opened is a FIFO, socket, device or folder: never read."""


def sniff_type(head: bytes) -> tuple[str, str] | None:
    """(file name to send, content type) by magic bytes, or None for neither JPEG nor PNG."""
    if head.startswith(JPEG_MAGIC):
        return "image.jpg", "image/jpeg"
    if head.startswith(PNG_MAGIC):
        return "image.png", "image/png"
    return None


def _read_head(path: str | bytes, limit_bytes: int) -> tuple[bytes, os.stat_result]:
    """Up to one byte more than `limit_bytes` (enough to tell a file that is too large), and
    the `fstat` taken before the read: if the file changes while it is read, the next scan
    sees a size or mtime other than the recorded one and sends it again, never the reverse."""
    # Looked at by name first, so a device is never even opened (opening some has effects:
    # a tape rewinds); then what was opened is checked again, for a swap in between.
    _refuse_unless_regular(os.stat(path))
    fd = os.open(path, OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        _refuse_unless_regular(st)
        chunks: list[bytes] = []
        left = limit_bytes + 1
        while left > 0:
            # As much as the file holds (one byte more, to see its end), not the whole cap:
            # os.read allocates what it is asked for.
            chunk = os.read(fd, min(left, READ_CHUNK_BYTES if chunks else st.st_size + 1))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def _read_hashed(path: str | bytes, limit_bytes: int) -> tuple[bytes, os.stat_result, str | None]:
    """`_read_head` and the bytes' SHA-256 (hex), in the same thread; None when the file
    was not read whole (over the limit)."""
    data, st = _read_head(path, limit_bytes)
    whole = len(data) <= limit_bytes
    return data, st, hashlib.sha256(data).hexdigest() if whole else None


def _refuse_unless_regular(st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise NotRegular(f"{_kind(st.st_mode)}, not a regular file")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a plain file"


async def read_checked(path: str | bytes, limit_bytes: int = MAX_IMAGE_BYTES) -> Read:
    """The file's bytes (a `Checked`), or a `Refused` (reason, message) when the API would
    reject it; either with the content's SHA-256 when the whole file was read.

    `limit_bytes` is the most read: the API's limit, or with fitting on (pipeline/fitting.py)
    its read cap, the bytes over the API's limit then being fitted before they are sent."""
    try:
        data, st, digest = await in_daemon_thread(_read_hashed, path, limit_bytes)
    except FileNotFoundError:
        return Refused("missing", "the file vanished since the scan")
    except NotRegular as exc:
        return Refused("not_image", str(exc))
    except IsADirectoryError:
        return Refused("not_image", "a directory, not a file")
    except PermissionError as exc:
        return Refused("unreadable", exc.strerror or "permission denied")
    except OSError as exc:
        return Refused("unreadable", exc.strerror or str(exc))
    if not data:
        return Refused("empty", "zero bytes", digest)
    if len(data) > limit_bytes:
        if limit_bytes == MAX_IMAGE_BYTES:
            return Refused("too_large", f"over the API's {MAX_IMAGE_BYTES} bytes", digest)
        message = f"over the {limit_bytes} bytes read at most to fit a picture"
        return Refused("too_large", message, digest)
    if sniff_type(data[:8]) is None:
        return Refused("not_image", "neither JPEG nor PNG by its first bytes", digest)
    return Checked(data, st.st_size, st.st_mtime, digest)


class DaemonThreads:
    """A thread pool whose threads are daemons: one stuck in a system call (a read on a hung
    NFS mount) holds up neither a stopped run nor the process's exit.

    Not the default executor, nor a `ThreadPoolExecutor`: `asyncio.run` joins the default
    executor's threads on the way out, and the interpreter joins every `ThreadPoolExecutor`
    thread at exit, so one read that never returns would keep the process alive until SIGKILL.
    Threads start on demand and stay for the next job (a hand-off, not a thread start, per
    read: half the cost on a small file).
    """

    def __init__(self, max_threads: int, name: str) -> None:
        self._max_threads = max_threads
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads waiting for a job that no submit has promised them yet
        self._waiting = 0  # jobs queued with no thread promised: the next one free takes them

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            self._jobs.put(job)
            if self._idle:
                self._idle -= 1
            elif self._threads < self._max_threads:
                self._threads += 1
                name = f"{self._name}-{self._threads}"
                threading.Thread(target=self._serve, name=name, daemon=True).start()
            else:
                self._waiting += 1

    def _serve(self) -> None:
        while True:
            self._jobs.get()()
            with self._lock:
                if self._waiting:
                    self._waiting -= 1
                else:
                    self._idle += 1


# Two reads a worker at most (one being sent, one read ahead); past this many at once, reads
# queue. Enough for any concurrency a rate limit allows; a hung mount stalls reads anyway.
_FILE_THREADS = DaemonThreads(64, "platepipe-fs")


async def in_daemon_thread(function: Callable[..., T], *args: object) -> T:
    """`function(*args)` in one of the file-system daemon threads, awaited."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, error = function(*args), None
        except BaseException as exc:  # handed to the awaiting task, as an executor would
            result, error = None, exc
        # A closed loop (RuntimeError): the run is over and nobody waits for this any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, error)

    _FILE_THREADS.submit(work)
    return await future
