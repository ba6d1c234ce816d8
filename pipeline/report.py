"""What people read: the end-of-run summary and `status`, as text or JSON."""

from __future__ import annotations

from typing import Any

from pipeline.errors import EXIT_FAILED_ITEMS, EXIT_FATAL, EXIT_OK
from pipeline.progress import concurrency_text, format_duration
from pipeline.records import JobSummary

TOP_ERROR_CODES = 5


def plural(n: int, word: str) -> str:
    """`1 item`, `2 items`, `0 items`."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def format_job(summary: JobSummary, *, liveness: bool = True) -> str:
    """A job's counts; with `liveness` (`status`), whether anything works on it now and
    what its `running` items really are. A run's own summary leaves that out: it has ended."""
    counts = summary.counts
    lines = [
        f"job {summary.name}: {plural(summary.total, 'item')}",
        "  " + ", ".join(f"{status} {n}" for status, n in counts.items()),
        f"  API calls recorded: {summary.calls}",
    ]
    if summary.error_codes:
        top = sorted(summary.error_codes.items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append(
            "  error codes: " + ", ".join(f"{code} {n}" for code, n in top[:TOP_ERROR_CODES])
        )
    if summary.halted:
        lines.append(f"  HALTED: {summary.halted} (the next run, scan or work lifts it)")
    if liveness:
        lines += _liveness(summary)
    if summary.last_activity:
        when = summary.last_activity.isoformat(sep=" ", timespec="seconds")
        lines.append(f"  last activity: {when} UTC")
    return "\n".join(lines)


def _liveness(summary: JobSummary) -> list[str]:
    """Who works on the job now (pid, host, heartbeat age), and the rate and ETA only then."""
    lines = [
        f"  live: `{w.kind}` pid {w.pid} on {w.host}, heartbeat {w.heartbeat_age_s:.0f}s ago, "
        f"{plural(w.items_held, 'item')} held"
        + (f", {w.rate_share:.1f} requests/s" if w.rate_share is not None else "")
        + concurrency_text(w.concurrency, w.latency_ms)
        for w in summary.workers
    ]
    if summary.live and summary.left:
        lines.append(
            f"  rate: {summary.calls_per_s:.1f} calls/s over the last minute, "
            f"ETA {format_duration(summary.eta_s)}"
        )
    elif summary.left:
        line = f"  not running: {summary.left} items left"
        if summary.orphaned:
            line += (
                f", {summary.orphaned} of them marked running by a process that is gone "
                "(pending again at the next start)"
            )
        lines.append(f"{line}; `platepipe run --job {summary.name}` resumes")
    return lines


def format_jobs_line(summary: JobSummary) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in summary.counts.items() if v) or "empty"
    last = summary.last_activity
    when = last.isoformat(sep=" ", timespec="seconds") + " UTC" if last else "-"
    state = "live" if summary.live else "idle"
    if summary.halted:
        state = f"HALTED ({summary.halted})"
    items = plural(summary.total, "item")
    return f"{summary.name}\t{items} ({counts})\t{state}\tlast activity {when}"


def format_report(report: Any) -> str:
    """The summary a run prints at its end (`report` is a runner.RunReport)."""
    pool, elapsed = report.pool, report.elapsed_s
    rate = pool.calls / elapsed if elapsed > 0 else 0.0
    lines = [
        format_job(report.job, liveness=False),
        f"this run: scanned {plural(report.scan.files, 'file')}, {plural(pool.calls, 'call')} "
        f"({pool.retries} retried) in {elapsed:.1f}s, {rate:.1f} calls/s",
    ]
    lines += _call_trouble(report.calls)
    lines += _no_call(pool)
    if report.scan.recaptured:
        lines.append(
            f"  camera or capture time taken from the path for {report.scan.recaptured} "
            "items already known (no call)"
        )
    if report.scan.too_recent:
        lines.append(
            f"  left for the next run: {report.scan.too_recent} files modified within --min-age"
        )
    if report.scan.unreadable_dirs:
        folders = plural(report.scan.unreadable_dirs, "folder")
        lines.append(f"  not scanned: {folders} could not be listed (see the warnings)")
    if report.budget:  # --daily-budget: the day's spend
        lines.append(report.budget)
    if report.stopped_by and not report.fatal:
        why = report.message or report.stopped_by
        lines.append(f"stopped early ({why}): run again to resume")
    return "\n".join(lines)


def _no_call(pool: Any) -> list[str]:
    """Items done from a recognition of the same content (pipeline/dedupe.py)."""
    parts = []
    if getattr(pool, "copies", 0):
        parts.append(f"copies {pool.copies} (no call)")
    if getattr(pool, "unchanged", 0):
        parts.append(f"unchanged content {pool.unchanged} (no call)")
    return ["  " + ", ".join(parts)] if parts else []


def _call_trouble(tally: Any) -> list[str]:
    """Transient errors by code, and when the API refused calls for its limit, the rate it
    seemed to allow: what to give --rate next time."""
    if tally is None:
        return []
    lines = []
    if tally.transient:
        top = sorted(tally.transient.items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append("  transient errors (retried): " + ", ".join(f"{c} {n}" for c, n in top))
    if tally.throttled:
        allowed = tally.allowed_per_s
        lines.append(
            f"  throttled: {tally.throttled} calls refused for the API's call limit; it seemed to "
            f"allow about {allowed} calls/s (try --rate {max(allowed, 1)})"
        )
    return lines


def job_json(summary: JobSummary) -> dict[str, Any]:
    return {
        "job": summary.name,
        "total": summary.total,
        "counts": summary.counts,
        "error_codes": summary.error_codes,
        "calls": summary.calls,
        "calls_per_s": round(summary.calls_per_s, 3),
        "eta_s": None if summary.eta_s is None else round(summary.eta_s, 1),
        "live": summary.live,
        "workers": [
            {
                "kind": w.kind,
                "pid": w.pid,
                "host": w.host,
                "heartbeat_age_s": round(w.heartbeat_age_s, 1),
                "items_held": w.items_held,
                "rate_share_per_s": w.rate_share,
                "concurrency": w.concurrency,
                "latency_ms": w.latency_ms,
            }
            for w in summary.workers
        ],
        "orphaned": summary.orphaned,
        "halted": summary.halted,
        "created_at": summary.created_at.isoformat(),
        "last_activity": summary.last_activity.isoformat() if summary.last_activity else None,
    }


def check_code(summaries: list[JobSummary]) -> int:
    """`status --check`: 1 when a job is halted (as the run that met the fatal answer
    exited), else 4 when one has failed items (as a run that finished with them), else 0."""
    if any(s.halted for s in summaries):
        return EXIT_FATAL
    if any(s.counts["failed"] for s in summaries):
        return EXIT_FAILED_ITEMS
    return EXIT_OK


ITEM_COLUMNS = (
    "path", "status", "attempts", "error_code", "error_message", "camera", "captured_at",
    "updated_at",
)  # fmt: skip


def item_json(row: Any) -> dict[str, Any]:
    """One line of `platepipe items --json`."""
    record = dict(zip(ITEM_COLUMNS, row, strict=True))
    for key in ("captured_at", "updated_at"):
        if record[key] is not None:
            record[key] = record[key].isoformat(sep=" ", timespec="seconds")
    return record


def format_item(row: Any) -> str:
    """One line of `platepipe items`: status, code, attempts, path, message (tab-separated)."""
    record = dict(zip(ITEM_COLUMNS, row, strict=True))
    message = (record["error_message"] or "").replace("\t", " ").replace("\n", " ")
    return "\t".join(
        (
            record["status"],
            record["error_code"] or "-",
            str(record["attempts"]),
            record["path"],
            message,
        )
    ).rstrip("\t")
