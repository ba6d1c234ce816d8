"""Who a process is, so that a worker on the same machine can tell a live peer from a dead one.

A pid alone does not say it: after a reboot, or in another container, a new process gets the
dead one's pid (in a container every run is pid 1). A process is named here by the kernel's
boot id, its PID namespace and its start time in clock ticks since boot; the pid is the same
process only when all three match. Where the names cannot be compared (another machine,
another PID namespace, no /proc), the caller falls back on the heartbeat.
"""

from __future__ import annotations

import os
from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
START_TIME_FIELD = 19  # starttime, the 22nd field of /proc/PID/stat, counted after the name


def _stat_fields(pid: int) -> list[bytes] | None:
    """/proc/PID/stat after the process name (which may hold spaces); None if no such pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[-1].split()
    except OSError:
        return None


def _namespace() -> str | None:
    """This machine's boot and this process's PID namespace: where a pid means something."""
    try:
        return f"{BOOT_ID.read_text().strip()}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


def process_key(pid: int | None = None) -> str | None:
    """`boot/pidns/starttime` of this process (pids are only compared in our own namespace)."""
    pid = os.getpid() if pid is None else pid
    where = _namespace()
    fields = _stat_fields(pid)
    if where is None or fields is None or len(fields) <= START_TIME_FIELD:
        return None
    return f"{where}/{fields[START_TIME_FIELD].decode()}"


def is_gone(pid: int, key: str | None) -> bool:
    """True when process `pid`, registered as `key`, certainly no longer runs: no such pid, a
    zombie, or another process under its pid. False when alive or when it cannot be told."""
    if not key:  # registered by an older platepipe: the pid alone, as it did
        fields = _stat_fields(pid)
        return fields is None or fields[:1] == [b"Z"]
    where, _, started = key.rpartition("/")
    if where != _namespace():
        return False  # another boot or another PID namespace: the pid means nothing here
    fields = _stat_fields(pid)
    if fields is None:
        return True
    if len(fields) <= START_TIME_FIELD:
        return False
    return fields[0] == b"Z" or fields[START_TIME_FIELD].decode() != started
