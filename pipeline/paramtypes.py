"""The command line's value types: durations, clock times, finite positive numbers, patterns.

Pure click: the settings table (settings.py) names them, and the CLI shows their errors as
usage errors (exit 2)."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Any

import click

from pipeline.capture import PathPattern, PatternError

SECONDS_PER_UNIT = {"h": 3600, "m": 60, "s": 1}


class Duration(click.ParamType):
    """Seconds, from `3600`, `90s`, `45m`, `2h` or `1h30m`; `positive`: more than zero."""

    name = "duration"

    def __init__(self, *, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        seconds = self._seconds(value, param, ctx)
        if self.positive and seconds <= 0:
            self.fail(f"{value!r} is no time at all: give a duration above zero", param, ctx)
        return seconds

    def _seconds(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return float(text)
        parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            self.fail(f"{value!r} is not a duration like 90m, 2h, 1h30m or 3600", param, ctx)
        return sum(float(n) * SECONDS_PER_UNIT[u] for n, u in parts)


class PositiveFloat(click.FloatRange):
    """A finite number above zero: `nan` and `inf` are not rates or timeouts."""

    def __init__(self) -> None:
        super().__init__(min=0, min_open=True)

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class ClockTime(click.ParamType):
    """The next local time HH:MM from now: tonight's 23:00, or tomorrow's 06:00."""

    name = "HH:MM"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            clock = datetime.strptime(str(value).strip(), "%H:%M").time()
        except ValueError:
            self.fail(f"{value!r} is not a time like 06:30", param, ctx)
        now = datetime.now()
        at = datetime.combine(now.date(), clock)
        return at if at > now else at + timedelta(days=1)


class Concurrency(click.ParamType):
    """`auto` (None: the pool sizes itself to the rate) or a whole number above zero."""

    name = "auto|N"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | None:
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return None
        if text.isdigit() and int(text) > 0:
            return int(text)
        self.fail(f"{value!r} is neither auto nor a whole number above zero", param, ctx)


def positive(kind: type) -> click.ParamType:
    return click.IntRange(min=1) if kind is int else PositiveFloat()


def check_pattern(_ctx: Any, _param: Any, value: str | None) -> str | None:
    """The --capture-pattern callback: a usage error for a pattern that cannot work."""
    try:
        PathPattern.parse(value)
    except PatternError as exc:
        raise click.BadParameter(str(exc)) from None
    return value or None
