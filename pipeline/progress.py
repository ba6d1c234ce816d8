"""Progress while a run goes: a live panel on a terminal (rich), a plain line every N seconds
in cron's logs, nothing with --quiet. The final summary is report.py's."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

log = logging.getLogger(__name__)

LIVE_REFRESH_S = 1.0


STOP_HINT = "Ctrl-C: stop after the calls in flight (twice: at once); run again to resume"


@dataclass(frozen=True)
class Snapshot:
    scanned: int | None  # None: this process does not scan (`work`, `run` without roots)
    scan_finished: bool
    done: int
    failed: int
    skipped: int
    retrying: int
    calls: int
    calls_per_s: float
    left: int | None  # pending or running in the whole job, as last counted
    job_calls_per_s: float | None = None  # every worker of the job together, when known
    concurrency: int | None = None  # calls in flight this process allows itself now
    latency_ms: float | None = None  # the API's latency it measures (p90), None before any

    @property
    def eta_s(self) -> float | None:
        rate = self.job_calls_per_s if self.job_calls_per_s is not None else self.calls_per_s
        if self.left is None or rate <= 0 or not self.scan_finished:
            return None
        return self.left / rate

    def scanned_text(self) -> str | None:
        if self.scanned is None:
            return None
        return f"{self.scanned:,}" + ("" if self.scan_finished else " …")


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def concurrency_text(concurrency: int | None, latency_ms: float | None) -> str:
    """`, concurrency 48, latency p90 1120 ms`: the calls in flight a worker allows itself
    and the API's latency it measures (each left out while not known)."""
    text = "" if concurrency is None else f", concurrency {concurrency}"
    if latency_ms is not None:
        text += f", latency p90 {latency_ms:.0f} ms"
    return text


class LineProgress:
    """One log line per report: for cron mail and log files."""

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def show(self, s: Snapshot) -> None:
        scanned = (
            "" if s.scanned is None else f"scanned {s.scanned}{'' if s.scan_finished else '+'}, "
        )
        log.info(
            "%sdone %d, failed %d, skipped %d, retrying %d, left %s; %d calls, %.1f/s%s, ETA %s",
            scanned,
            s.done,
            s.failed,
            s.skipped,
            s.retrying,
            "-" if s.left is None else s.left,
            s.calls,
            s.calls_per_s,
            concurrency_text(s.concurrency, s.latency_ms),
            format_duration(s.eta_s),
        )


class LiveProgress:
    """A panel redrawn in place on the terminal (stderr, so stdout stays the summary).

    While it shows, log records go through the panel's console, which prints them above it:
    written straight to stderr they would tear the panel and leave stale copies behind.
    """

    def __init__(self) -> None:
        self._live = Live(console=Console(file=sys.stderr), auto_refresh=False, transient=True)
        self._started = time.monotonic()
        self._swapped: list[tuple[logging.Handler, ConsoleLogHandler]] = []

    def __enter__(self) -> LiveProgress:
        self._live.start()
        self._live.update(Text(STOP_HINT, style="dim"), refresh=True)
        root = logging.getLogger()
        for handler in list(root.handlers):
            if isinstance(handler, logging.StreamHandler) and handler.stream in (
                sys.stderr,
                sys.__stderr__,
            ):
                through = ConsoleLogHandler(self._live.console, handler)
                root.removeHandler(handler)
                root.addHandler(through)
                self._swapped.append((handler, through))
        return self

    def __exit__(self, *exc_info: object) -> None:
        root = logging.getLogger()
        for handler, through in self._swapped:
            root.removeHandler(through)
            root.addHandler(handler)
        self._swapped.clear()
        self._live.stop()

    def show(self, s: Snapshot) -> None:
        table = Table.grid(padding=(0, 2))
        scanned = s.scanned_text()
        if scanned is not None:
            table.add_row("scanned", scanned)
        table.add_row("done", f"[green]{s.done:,}[/]")
        table.add_row("failed", f"[red]{s.failed:,}[/]")
        table.add_row("skipped", f"[yellow]{s.skipped:,}[/]")
        table.add_row("retrying", f"{s.retrying:,}")
        table.add_row("left in the job", "-" if s.left is None else f"{s.left:,}")
        table.add_row("calls", f"{s.calls:,} ({s.calls_per_s:.1f}/s)")
        if s.concurrency is not None:
            shown = concurrency_text(s.concurrency, s.latency_ms)
            table.add_row("concurrency", shown.removeprefix(", concurrency "))
        elapsed = format_duration(time.monotonic() - self._started)
        table.add_row("elapsed / ETA", f"{elapsed} / {format_duration(s.eta_s)}")
        self._live.update(Group(table, Text(STOP_HINT, style="dim")), refresh=True)


class ConsoleLogHandler(logging.Handler):
    """Stands in for a stderr handler while the live panel shows: the same level, format and
    filters (the secret's redaction among them), printed by rich above the panel."""

    def __init__(self, console: Console, replaced: logging.Handler) -> None:
        super().__init__(replaced.level)
        self.console = console
        self.setFormatter(replaced.formatter)
        for item in replaced.filters:
            self.addFilter(item)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(Text(self.format(record)), soft_wrap=True)
        except Exception:
            self.handleError(record)
