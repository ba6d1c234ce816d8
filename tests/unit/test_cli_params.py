"""The command line's parameter types: durations and the --deadline clock time."""

from __future__ import annotations

from datetime import datetime, timedelta

import click
import pytest

from pipeline.paramtypes import ClockTime, Duration, PositiveFloat


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600), ("90s", 90), ("45m", 2700), ("2h", 7200), ("1h30m", 5400), ("1.5h", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert Duration().convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10x", "1h30", "m5", "-5m"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(click.BadParameter):
        Duration().convert(text, None, None)


def test_a_deadline_is_the_next_such_clock_time() -> None:
    now = datetime.now()
    later = (now + timedelta(minutes=5)).strftime("%H:%M")
    earlier = (now - timedelta(minutes=5)).strftime("%H:%M")

    soon = ClockTime().convert(later, None, None)
    tomorrow = ClockTime().convert(earlier, None, None)

    assert now < soon <= now + timedelta(minutes=6)
    assert now + timedelta(hours=23) < tomorrow <= now + timedelta(days=1)


@pytest.mark.parametrize("text", ["25:00", "6", "six", "06:60"])
def test_bad_clock_times_are_usage_errors(text: str) -> None:
    with pytest.raises(click.BadParameter):
        ClockTime().convert(text, None, None)


@pytest.mark.parametrize("text", ["0", "0s", "0m"])
def test_a_window_of_no_time_is_a_usage_error(text: str) -> None:
    assert Duration().convert(text, None, None) == 0  # --max-outage 0: stop at the first outage
    with pytest.raises(click.BadParameter):
        Duration(positive=True).convert(text, None, None)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "0", "-1", "NaN", "Infinity"])
def test_rates_and_timeouts_are_finite_and_above_zero(text: str) -> None:
    with pytest.raises(click.BadParameter):
        PositiveFloat().convert(text, None, None)
    assert PositiveFloat().convert("2.5", None, None) == 2.5
