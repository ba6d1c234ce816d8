"""Find the images under the roots and enqueue them, streaming: never the whole listing in memory.

The walk is plain blocking `os.scandir` on an explicit stack, run in a thread one batch at a time
so slow network storage never stalls the event loop. Each batch is inserted into the items table
as it is found, so workers start submitting while the scan is still running.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import re
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

from pipeline.capture import PathPattern
from pipeline.preflight import in_daemon_thread
from pipeline.records import Found, Job
from pipeline.store import Store

log = logging.getLogger(__name__)

SCAN_BATCH_FILES = 2000


def compile_globs(patterns: Sequence[str]) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
    """(name pattern, relative-path pattern) matching any glob, case-insensitively.

    A glob with a `/` is matched against the path relative to its root, any other against the
    file or folder name alone: `*.jpg` matches every JPEG, `cam1/*` one folder's files.
    """
    by_name = [fnmatch.translate(p) for p in patterns if "/" not in p]
    by_path = [fnmatch.translate(p.strip("/")) for p in patterns if "/" in p]

    def join(parts: list[str]) -> re.Pattern[str] | None:
        return re.compile("|".join(parts), re.IGNORECASE) if parts else None

    return join(by_name), join(by_path)


@dataclass(frozen=True)
class Filter:
    include: Sequence[str]
    exclude: Sequence[str] = ()
    _include: tuple = field(init=False, repr=False)
    _exclude: tuple = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_include", compile_globs(self.include))
        object.__setattr__(self, "_exclude", compile_globs(self.exclude))

    def includes(self, name: str, relpath: str) -> bool:
        return _matches(self._include, name, relpath) and not self.excludes(name, relpath)

    def excludes(self, name: str, relpath: str) -> bool:
        return _matches(self._exclude, name, relpath)


def _matches(compiled: tuple, name: str, relpath: str) -> bool:
    by_name, by_path = compiled
    return bool(
        (by_name is not None and by_name.match(name))
        or (by_path is not None and by_path.match(relpath))
    )


@dataclass
class ScanStats:
    files: int = 0  # files matched (new, known, or changed since)
    queued: int = 0  # of those, queued by this scan: new, or changed since
    unreadable_dirs: int = 0
    too_recent: int = 0  # modified within --min-age: left for the next run
    captured: int = 0  # files whose path the capture pattern matched
    recaptured: int = 0  # known items the pattern gave a (new) camera or capture time
    finished: bool = False


def distinct_roots(roots: Sequence[str], keep: Filter) -> list[str]:
    """The roots to walk, each file once: a root given twice, or inside another root whose
    walk reaches it, is dropped (`run /archive /archive/cam01` must not count cam01 twice).
    A root the outer walk would not reach (an excluded or symlinked folder on the way, a
    file the globs leave out) stays: given by name, it is walked by itself."""
    absolute = list(dict.fromkeys(os.path.abspath(root) for root in roots))
    return [r for r in absolute if not any(_reaches(o, r, keep) for o in absolute if o != r)]


def _reaches(outer: str, root: str, keep: Filter) -> bool:
    """Whether walking `outer` yields `root` (a file) or descends into it (a folder)."""
    if not os.path.isdir(outer) or not root.startswith(outer.rstrip(os.sep) + os.sep):
        return False
    parts = os.path.relpath(root, outer).split(os.sep)
    for depth, name in enumerate(parts, start=1):
        rel, path = "/".join(parts[:depth]), os.path.join(outer, *parts[:depth])
        if os.path.isdir(path) and not os.path.islink(path):  # a folder the walk enters
            if keep.excludes(name, rel):
                return False
        elif depth < len(parts) or os.path.isdir(path):
            return False  # behind a file or a symlinked folder, which the walk never enters
        else:
            return keep.includes(name, rel)  # a file: taken if the globs take it
    return True


def walk(
    roots: Sequence[str],
    keep: Filter,
    stats: ScanStats,
    capture: PathPattern | None = None,
    min_age_s: float = 0.0,
) -> Iterator[Found]:
    """Yield every file under `roots` that `keep` includes, depth first, in directory order,
    each once however the roots overlap.

    Symlinked folders are not followed (no loops, no escaping the tree); symlinked files are.
    A link whose target is gone (or loops) is still yielded, so that its item records why it
    could not be sent. FIFOs, sockets and devices are passed over: reading one could block.
    Files modified less than `min_age_s` ago (a camera may still be writing them) are left
    for the next scan, counted in `stats.too_recent`.
    """
    newest_mtime = time.time() - min_age_s if min_age_s > 0 else None
    yield from _walk(distinct_roots(roots, keep), keep, stats, capture, newest_mtime)
    if capture is not None and stats.files and not stats.captured:
        log.warning(
            "the capture pattern %r matched none of the %d paths: camera and capture time "
            "come from EXIF or mtime",
            capture.regex.pattern,
            stats.files,
        )


def _walk(
    roots: Sequence[str],
    keep: Filter,
    stats: ScanStats,
    capture: PathPattern | None,
    newest_mtime: float | None,
) -> Iterator[Found]:
    for root in roots:
        if not os.path.isdir(root):
            found = _found(root, stats, capture, newest_mtime)
            if found is not None:
                yield found
            continue
        stack = [(root, "")]
        while stack:
            folder, rel_folder = stack.pop()
            subfolders: list[tuple[str, str]] = []
            try:
                # Entries one at a time: a flat folder of a million frames is never a list.
                with os.scandir(folder) as entries:
                    for entry in entries:
                        rel = f"{rel_folder}/{entry.name}" if rel_folder else entry.name
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                if not keep.excludes(entry.name, rel):
                                    subfolders.append((entry.path, rel))
                                continue
                        except OSError:
                            continue
                        if keep.includes(entry.name, rel):
                            found = _found(entry.path, stats, capture, newest_mtime)
                            if found is not None:
                                yield found
            except OSError as exc:
                stats.unreadable_dirs += 1
                log.warning("cannot list %s: %s", _shown(folder), exc.strerror or exc)
            stack.extend(reversed(subfolders))


def _found(
    path: str, stats: ScanStats, capture: PathPattern | None, newest_mtime: float | None = None
) -> Found | None:
    try:
        st = os.stat(path)
    except OSError:
        if not os.path.islink(path):
            return None  # gone since it was listed
        st = None  # a broken or looping link: enqueued, the worker records why
    if st is not None and not stat.S_ISREG(st.st_mode):
        return None
    if st is not None and newest_mtime is not None and st.st_mtime > newest_mtime:
        stats.too_recent += 1
        return None
    stats.files += 1
    size, mtime = (st.st_size, st.st_mtime) if st else (0, 0.0)
    raw_path = None
    shown = _shown(path)
    if shown != path:
        # The database stores text: keep the escaped name, and the real bytes beside it.
        path, raw_path = shown, os.fsencode(path)
    camera, captured_at = capture.match(path) if capture else (None, None)
    if camera is not None or captured_at is not None:
        stats.captured += 1
    return Found(path, size, mtime, raw_path, camera, captured_at)


# The text an escape writes: a byte that is not UTF-8 is always 0x80 or above.
_LOOKS_ESCAPED = re.compile(r"\\x[89a-f][0-9a-f]")


def _shown(path: str) -> str:
    """`path` as text that any database and terminal takes, one text per path (items are keyed
    on it): a UTF-8 path as it is, unless it holds text that reads like an escape (`\\xff`);
    any other path escaped: each backslash doubled, each byte that is not UTF-8 as `\\xNN`.

    One-to-one: a path shown as it is holds no `\\xNN` text, while an escaped one always does
    (an odd byte's escape, or a doubled backslash before such text); and within the escaped
    ones every literal backslash is doubled, so each reads back to exactly one name. Plain
    names, Windows-looking ones with backslashes included, are shown unchanged.
    """
    if _LOOKS_ESCAPED.search(path) is None:
        try:
            path.encode("utf-8")
            return path
        except UnicodeEncodeError:
            pass  # bytes that are not UTF-8 (surrogate escapes from the file system)
    # 0x5C is never part of a multi-byte UTF-8 sequence: doubling it in the bytes is safe.
    raw = os.fsencode(path).replace(b"\\", b"\\\\")
    return raw.decode("utf-8", errors="backslashreplace")


async def batches(files: Iterator[Found]) -> AsyncIterator[list[Found]]:
    """`files` in lists of SCAN_BATCH_FILES, walked in a daemon thread one batch ahead: the
    walk of the next batch (mostly system calls) overlaps whatever the caller does with this
    one, so neither waits for the other, and at most two batches are in memory."""

    def take() -> list[Found]:
        return list(islice(files, SCAN_BATCH_FILES))

    walking = asyncio.ensure_future(in_daemon_thread(take))
    try:
        while batch := await walking:
            walking = asyncio.ensure_future(in_daemon_thread(take))
            yield batch
    finally:
        # On an error or a stop the walk's thread, if busy, finishes its batch on its own (it
        # holds the generator); nobody waits for it, on a hung file system least of all: it is
        # a daemon thread, so not even the process's exit does.
        walking.cancel()


async def scan_into(
    store: Store,
    job: Job,
    roots: Sequence[str],
    keep: Filter,
    stats: ScanStats,
    capture: PathPattern | None = None,
    on_batch: Callable[[], None] = lambda: None,
    min_age_s: float = 0.0,
) -> None:
    """Walk `roots` and enqueue what `keep` includes in batches (`batches`: the walk of the
    next overlaps the insert of this one), calling `on_batch` after each."""
    async for batch in batches(walk(roots, keep, stats, capture, min_age_s)):
        added = await store.add_found(job, batch)
        stats.queued += added.queued
        stats.recaptured += added.recaptured
        on_batch()
    stats.finished = True
