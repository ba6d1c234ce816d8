"""Progress while a run goes: a live panel on a terminal (rich), a plain line every N seconds
in cron's logs, nothing with --quiet. The final summary is report.py's."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table

log = logging.getLogger(__name__)

LIVE_REFRESH_S = 1.0


@dataclass(frozen=True)
class Snapshot:
    scanned: int
    scan_finished: bool
    done: int
    failed: int
    skipped: int
    retrying: int
    calls: int
    calls_per_s: float
    left: int | None  # pending or running in the job, as last counted

    @property
    def eta_s(self) -> float | None:
        if self.left is None or self.calls_per_s <= 0 or not self.scan_finished:
            return None
        return self.left / self.calls_per_s


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class LineProgress:
    """One log line per report: for cron mail and log files."""

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def show(self, s: Snapshot) -> None:
        log.info(
            "scanned %d%s, done %d, failed %d, skipped %d, retrying %d, left %s; "
            "%d calls, %.1f/s, ETA %s",
            s.scanned,
            "" if s.scan_finished else "+",
            s.done,
            s.failed,
            s.skipped,
            s.retrying,
            "-" if s.left is None else s.left,
            s.calls,
            s.calls_per_s,
            format_duration(s.eta_s),
        )


class LiveProgress:
    """A panel redrawn in place on the terminal (stderr, so stdout stays the summary)."""

    def __init__(self) -> None:
        self._live = Live(console=Console(file=sys.stderr), auto_refresh=False, transient=True)
        self._started = time.monotonic()

    def __enter__(self) -> LiveProgress:
        self._live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._live.stop()

    def show(self, s: Snapshot) -> None:
        table = Table.grid(padding=(0, 2))
        table.add_row("scanned", f"{s.scanned:,}" + ("" if s.scan_finished else " …"))
        table.add_row("done", f"[green]{s.done:,}[/]")
        table.add_row("failed", f"[red]{s.failed:,}[/]")
        table.add_row("skipped", f"[yellow]{s.skipped:,}[/]")
        table.add_row("retrying", f"{s.retrying:,}")
        table.add_row("left", "-" if s.left is None else f"{s.left:,}")
        table.add_row("calls", f"{s.calls:,} ({s.calls_per_s:.1f}/s)")
        elapsed = format_duration(time.monotonic() - self._started)
        table.add_row("elapsed / ETA", f"{elapsed} / {format_duration(s.eta_s)}")
        self._live.update(table, refresh=True)
