"""The local calendar day a call counts on, when the day ends, and what a batch of outcomes adds
to `usage`: near local midnight, in fixed time zones (TZ), at fixed times, no sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from pipeline.budget import spent_message, with_hold
from pipeline.records import Answer, Call, CallResult, Fit, Hold, ItemStatus, Outcome
from pipeline.usage import (
    UsageRow,
    day_ends_at,
    first_day,
    format_usage,
    holds_to_release,
    local_day,
    usage_counts,
    usage_json,
)


@pytest.fixture
def zone(monkeypatch):
    """Set the process's local time zone for one test."""

    def set_zone(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield set_zone
    monkeypatch.undo()
    time.tzset()


def test_the_day_turns_at_local_midnight_not_utc(zone):
    zone("Asia/Seoul")  # UTC+9: local midnight is 15:00 UTC
    assert local_day(datetime(2026, 11, 30, 14, 59, 59)) == "2026-11-30"
    assert local_day(datetime(2026, 11, 30, 15, 0, 0)) == "2026-12-01"
    zone("America/New_York")  # UTC-5 in winter: local midnight is 05:00 UTC
    assert local_day(datetime(2026, 12, 1, 4, 59, 59)) == "2026-11-30"
    assert local_day(datetime(2026, 12, 1, 5, 0, 0)) == "2026-12-01"
    zone("UTC")
    assert local_day(datetime(2026, 12, 31, 23, 59, 59)) == "2026-12-31"


def test_the_day_ends_at_the_next_local_midnight(zone):
    zone("Asia/Seoul")
    ends = day_ends_at("2026-11-30")
    assert ends.astimezone(UTC) == datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
    zone("Europe/Berlin")  # the day clocks go back: 25 hours long, still ends at midnight
    ends = day_ends_at("2026-10-25")
    assert ends.astimezone(UTC) == datetime(2026, 10, 25, 23, 0, tzinfo=UTC)


def test_the_summary_says_when_the_day_ends(zone):
    zone("Asia/Seoul")
    now = datetime(2026, 11, 30, 21, 30, tzinfo=UTC).astimezone()  # 06:30 on Dec 1st, local
    message = spent_message(500, "2026-12-01", now)
    assert message.startswith("the daily budget of 500 calls is spent for 2026-12-01")
    assert "ends at 2026-12-02 00:00 KST (in 17h30m)" in message


def test_the_last_n_days_include_today():
    assert first_day(1, "2026-12-01") == "2026-12-01"
    assert first_day(30, "2026-12-01") == "2026-11-02"


def _outcome(
    started: datetime, *, reached: bool = True, hold: Hold | None = None, fit: Fit | None = None
) -> Outcome:
    answer = Answer("0" if reached else "connection_refused", "", 0.1, reached=reached)
    call = Call(started, answer, CallResult.DONE if reached else CallResult.RETRY)
    outcome = Outcome(1, ItemStatus.PENDING, 1, call=call, fit=fit)
    return with_hold(outcome, hold)


def test_usage_counts_calls_that_reached_the_api_by_local_day(zone):
    zone("Asia/Seoul")
    before = datetime(2026, 11, 30, 14, 59, 59)  # 23:59:59 local
    after = datetime(2026, 11, 30, 15, 0, 1)  # 00:00:01 local, the next day
    outcomes = [
        _outcome(before),
        _outcome(after),
        _outcome(after),
        _outcome(after, reached=False),  # refused: no call was paid
        _outcome(after, fit=Fit(4_000_000, 0.5, 60, 8000, 6000, 4000, 3000)),  # a call, a fit
        _outcome(
            after, reached=False, fit=Fit(4_000_000, 0.5, 60, 8000, 6000, 4000, 3000)
        ),  # neither
        Outcome(2, ItemStatus.SKIPPED, 0, "empty"),  # no call at all
        Outcome(3, ItemStatus.DONE, 0, copied_from=9, copy_of=9),  # a copy, no call
        Outcome(4, ItemStatus.DONE, 0, copied_from=4),  # touched, its own result: neither
        # Held on the 30th, started a moment after midnight: it counts where it was held.
        _outcome(after, hold=Hold("w", "2026-11-30")),
    ]

    counts = usage_counts(outcomes, job_id=7)

    expected = {("2026-11-30", 7): [2, 0, 0], ("2026-12-01", 7): [3, 0, 1]}
    expected.setdefault((local_day(), 7), [0, 0, 0])[1] += 1  # the copy: today, no call
    assert {k: [c.calls, c.copies, c.fits] for k, c in counts.items()} == expected


def test_every_held_call_ends_its_hold_reached_or_not():
    outcomes = [
        _outcome(datetime(2026, 11, 30), hold=Hold("w1", "2026-11-30")),
        _outcome(datetime(2026, 11, 30), reached=False, hold=Hold("w1", "2026-11-30")),
        _outcome(datetime(2026, 11, 30), hold=Hold("w2", "2026-11-30")),
        _outcome(datetime(2026, 11, 30)),  # no budget: nothing held
    ]
    assert holds_to_release(outcomes) == {("w1", "2026-11-30"): 2, ("w2", "2026-11-30"): 1}


def test_usage_text_and_json():
    rows = [
        UsageRow("2026-11-30", "a", 3, 1, 0),
        UsageRow("2026-11-30", "b", 2, 0, 1),
        UsageRow("2026-11-29", "a", 7, 0, 0),
    ]
    text = format_usage(rows, 30)
    assert text.splitlines()[-1].split() == ["total", "last", "30", "days", "12", "1", "1"]
    assert "2026-11-30  (day total)" in text
    report = usage_json(rows, 30, "2026-11-01")
    assert report["total"] == {"calls": 12, "copies": 1, "fits": 1}
    assert report["per_day"] == [
        {"day": "2026-11-30", "calls": 5, "copies": 1, "fits": 1},
        {"day": "2026-11-29", "calls": 7, "copies": 0, "fits": 0},
    ]
    assert format_usage([], 7) == "no calls, copies or fits in the last 7 days"
