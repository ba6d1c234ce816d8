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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

from pipeline.store import Job, Store

log = logging.getLogger(__name__)

SCAN_BATCH_FILES = 2000

Found = tuple[str, int, float]  # absolute path, size in bytes, mtime


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
    files: int = 0  # files matched and enqueued (new or already known)
    unreadable_dirs: int = 0
    unencodable_names: int = 0
    finished: bool = False


def walk(roots: Sequence[str], keep: Filter, stats: ScanStats) -> Iterator[Found]:
    """Yield every file under `roots` that `keep` includes, depth first, in directory order.

    Symlinked folders are not followed (no loops, no escaping the tree); symlinked files are.
    """
    for root in roots:
        root = os.path.abspath(root)
        if os.path.isfile(root):
            found = _found(root, stats)
            if found is not None:
                yield found
            continue
        stack = [(root, "")]
        while stack:
            folder, rel_folder = stack.pop()
            try:
                with os.scandir(folder) as entries:
                    listed = list(entries)
            except OSError as exc:
                stats.unreadable_dirs += 1
                log.warning("cannot list %s: %s", folder, exc.strerror or exc)
                continue
            subfolders = []
            for entry in listed:
                rel = f"{rel_folder}/{entry.name}" if rel_folder else entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if not keep.excludes(entry.name, rel):
                            subfolders.append((entry.path, rel))
                        continue
                    if not keep.includes(entry.name, rel) or not entry.is_file():
                        continue
                    found = _found(entry.path, stats, entry.stat())
                except OSError as exc:
                    log.warning("cannot stat %s: %s", entry.path, exc.strerror or exc)
                    continue
                if found is not None:
                    yield found
            stack.extend(reversed(subfolders))


def _found(path: str, stats: ScanStats, st: os.stat_result | None = None) -> Found | None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        # The database stores text; a name that is not UTF-8 cannot be stored as it is.
        stats.unencodable_names += 1
        log.warning("skipping a file whose name is not valid UTF-8: %r", path)
        return None
    st = st or os.stat(path)
    stats.files += 1
    return (path, st.st_size, st.st_mtime)


async def scan_into(
    store: Store,
    job: Job,
    roots: Sequence[str],
    keep: Filter,
    stats: ScanStats,
    on_batch: Callable[[], None] = lambda: None,
) -> None:
    """Walk `roots` and enqueue what `keep` includes in batches, calling `on_batch` after each."""
    files = walk(roots, keep, stats)
    while batch := await asyncio.to_thread(lambda: list(islice(files, SCAN_BATCH_FILES))):
        await store.add_items(job, batch)
        on_batch()
    stats.finished = True
