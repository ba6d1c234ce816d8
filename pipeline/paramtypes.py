"""The command line's value types (durations, clock times, finite positive numbers, patterns,
concurrency), and `Setting`: one row of the settings table (settings.py) and its click option.

Pure click: the settings table names them, and the CLI shows their errors as usage errors
(exit 2)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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


# -- one row of the settings table (settings.py) and the click option it makes ---------------


@dataclass(frozen=True)
class Setting:
    """One row of the table: a setting, declared once."""

    key: str  # the config file's key; `--key-with-dashes` is its option
    # Its type in a config file: str, int, float, bool or list (of str); object: whatever its
    # click type takes (concurrency: "auto" or a number).
    kind: type
    default: Any  # as a config file writes it; None: not set (command-line flags only)
    help: str
    commands: tuple[str, ...]  # the commands that have its option
    field: str | None = None  # its field in config.py's settings objects
    unit: str | None = None  # "s" (the field ends in _s), "1/s" (in _per_s), "calls"
    env: str | None = None  # the environment variable that sets it (README lists them)
    click_type: click.ParamType | None = None  # the option's type, when not plain text
    param: str | None = None  # the option's parameter name, when not the key
    toml: bool = True  # False: a command-line flag only, which a config file cannot hold
    option: bool = True  # False: in a config file only (secret_key_file)
    path: bool = False  # a file path: relative in a config file means beside that file
    flag: str | None = None  # the option's declaration, when not --key (--fit/--no-fit)
    click_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # is_flag, callback...
    # Per command, what its option does differently (check's own help, no variable).
    variants: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        """The option's parameter name: the key of click's values and of `default_map`."""
        return self.param or self.key

    @property
    def value(self) -> Any:
        """The default as the settings objects hold it: a list as a tuple, "" (unset) as None,
        and whatever the click type makes of it (concurrency's "auto" is None)."""
        if isinstance(self.default, list):
            return tuple(self.default)
        if self.kind is object and self.click_type is not None:
            return self.click_type.convert(self.default, None, None)
        return None if self.default == "" else self.default

    def option_for(self, command: str) -> Callable[[Any], Any]:
        """The click option of this setting on `command`."""
        flag = self.flag or f"--{self.key.replace('_', '-')}"
        kwargs: dict[str, Any] = {"help": self.help, "envvar": self.env, **self.click_args}
        if self.default is not None and not kwargs.get("is_flag"):
            kwargs["default"] = self.default
            kwargs["show_default"] = bool(self.default)
        if self.click_type is not None:
            kwargs["type"] = self.click_type
        kwargs.update(self.variants.get(command, {}))
        # Say the variable in --help unless the help text names it already.
        envvar = kwargs["envvar"]
        kwargs.setdefault("show_envvar", bool(envvar) and envvar not in kwargs["help"])
        return click.option(flag, self.name, **kwargs)
