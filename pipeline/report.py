"""What people read: the end-of-run summary and `status`, as text or JSON."""

from __future__ import annotations

from typing import Any

from pipeline.progress import format_duration
from pipeline.store import JobSummary, WorkerState

TOP_ERROR_CODES = 5


def plural(n: int, word: str) -> str:
    """`1 item`, `2 items`, `0 items`."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def format_job(summary: JobSummary) -> str:
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
    left = counts["pending"] + counts["running"]
    if left:
        lines.append(
            f"  rate: {summary.calls_per_s:.1f} calls/s over the last minute, "
            f"ETA {format_duration(summary.eta_s)}"
        )
    if summary.last_activity:
        when = summary.last_activity.isoformat(sep=" ", timespec="seconds")
        lines.append(f"  last activity: {when} UTC")
    return "\n".join(lines)


def format_workers(workers: list[WorkerState]) -> str:
    """The live workers of a job, one line each, for under `format_job`; "" when none."""
    return "".join(
        f"\n  worker {w.kind} pid {w.pid} on {w.host}: heartbeat {w.heartbeat_age_s:.0f}s ago, "
        f"{w.items_held} items held"
        + (f", {w.rate_share:.1f} requests/s" if w.rate_share is not None else "")
        for w in workers
    )


def workers_json(workers: list[WorkerState]) -> list[dict[str, Any]]:
    return [
        {
            "host": w.host,
            "pid": w.pid,
            "kind": w.kind,
            "heartbeat_age_s": round(w.heartbeat_age_s, 1),
            "items_held": w.items_held,
            "rate_share_per_s": w.rate_share,
        }
        for w in workers
    ]


def format_jobs_line(summary: JobSummary) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in summary.counts.items() if v) or "empty"
    last = summary.last_activity
    when = last.isoformat(sep=" ", timespec="seconds") + " UTC" if last else "-"
    return f"{summary.name}\t{plural(summary.total, 'item')} ({counts})\tlast activity {when}"


def format_report(report: Any) -> str:
    """The summary a run prints at its end (`report` is a runner.RunReport)."""
    pool, elapsed = report.pool, report.elapsed_s
    rate = pool.calls / elapsed if elapsed > 0 else 0.0
    lines = [
        format_job(report.job),
        f"this run: scanned {plural(report.scan.files, 'file')}, {plural(pool.calls, 'call')} "
        f"({pool.retries} retried) in {elapsed:.1f}s, {rate:.1f} calls/s",
    ]
    if report.scan.unreadable_dirs:
        folders = plural(report.scan.unreadable_dirs, "folder")
        lines.append(f"  not scanned: {folders} could not be listed (see the warnings)")
    if report.stopped_by and not report.fatal:
        why = report.message or report.stopped_by
        lines.append(f"stopped early ({why}): run again to resume")
    return "\n".join(lines)


def job_json(summary: JobSummary) -> dict[str, Any]:
    return {
        "job": summary.name,
        "total": summary.total,
        "counts": summary.counts,
        "error_codes": summary.error_codes,
        "calls": summary.calls,
        "calls_per_s": round(summary.calls_per_s, 3),
        "eta_s": None if summary.eta_s is None else round(summary.eta_s, 1),
        "created_at": summary.created_at.isoformat(),
        "last_activity": summary.last_activity.isoformat() if summary.last_activity else None,
    }
