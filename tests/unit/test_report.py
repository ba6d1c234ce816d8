"""What `status`, `status --check` and the run's summary say, from the records alone."""

from __future__ import annotations

from datetime import datetime

from pipeline.records import Answer, Call, CallResult, ItemStatus, JobSummary, LiveWorker, Outcome
from pipeline.report import check_code, format_job, job_json
from pipeline.runner import CallTally

WHEN = datetime(2026, 11, 24, 23, 0, 0)


def summary(*, running=0, pending=0, failed=0, halted=None, workers=(), rate=7.0) -> JobSummary:
    counts = {"pending": pending, "running": running, "done": 3, "failed": failed, "skipped": 0}
    return JobSummary("J", counts, {}, 10, WHEN, WHEN, rate, halted, tuple(workers))


def test_nothing_live_means_no_rate_no_eta_and_orphans_named():
    dead = summary(running=65, pending=5)

    text = format_job(dead)

    assert "ETA" not in text and "calls/s" not in text
    assert "not running: 70 items left, 65 of them marked running by a process that is gone" in text
    assert dead.eta_s is None and job_json(dead)["orphaned"] == 65


def test_a_live_worker_is_shown_with_pid_host_heartbeat_concurrency_and_latency():
    worker = LiveWorker("nvr-01", 4121, "work", 1.4, 3, 7.5, 11, 1120.4)
    live = summary(pending=14, workers=[worker])

    text = format_job(live)

    assert (
        "live: `work` pid 4121 on nvr-01, heartbeat 1s ago, 3 items held, 7.5 requests/s, "
        "concurrency 11, latency p90 1120 ms"
    ) in text
    assert "ETA 0m02s" in text and live.orphaned == 0
    assert job_json(live)["workers"] == [
        {
            "kind": "work",
            "pid": 4121,
            "host": "nvr-01",
            "heartbeat_age_s": 1.4,
            "items_held": 3,
            "rate_share_per_s": 7.5,
            "concurrency": 11,
            "latency_ms": 1120.4,
        }
    ]


def test_a_worker_before_its_first_measure_shows_no_concurrency_or_latency():
    text = format_job(summary(pending=1, workers=[LiveWorker("h", 1, "run", 0.2)]))
    assert "concurrency" not in text and "latency" not in text


def test_check_code_halted_first_then_failed_items():
    assert check_code([summary()]) == 0
    assert check_code([summary(failed=2)]) == 4
    assert check_code([summary(failed=2, halted="4010001 bad keys")]) == 1
    assert "HALTED: 4010001 bad keys" in format_job(summary(halted="4010001 bad keys"))


def outcome(code: str, result: str, second: int) -> Outcome:
    answer = Answer(code, "", 0.1)
    started = datetime(2026, 11, 24, 23, 0, second, 500)
    return Outcome(1, ItemStatus.PENDING, 1, call=Call(started, answer, CallResult(result)))


def test_the_tally_counts_transient_codes_and_what_the_api_let_through():
    tally = CallTally()
    for second, (admitted, refused) in enumerate([(20, 0), (15, 6), (14, 9), (16, 0)]):
        for _ in range(admitted):
            tally.add(outcome("0", "done", second))
        for _ in range(refused):
            tally.add(outcome("4000006", "throttled", second))
    tally.add(outcome("5000001", "retry", 5))
    tally.add(outcome("timeout", "paused", 5))
    tally.add(outcome("4000002", "failed", 5))
    tally.add(Outcome(2, "skipped", 0, "empty"))

    assert tally.throttled == 15
    assert tally.allowed_per_s == 15  # the busiest second that also saw refusals
    assert dict(tally.transient) == {"5000001": 1, "timeout": 1}
    assert CallTally().allowed_per_s is None
