"""Settings: their defaults, the TOML config file, and the secret key that is never printed.

Precedence, highest first: command-line flags, environment variables, the config file
(`--config FILE` or `PLATEPIPE_CONFIG`), then the defaults below. Click does the layering: the
file becomes its `default_map`, which flags and environment variables override.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

DEFAULT_ENDPOINT = "https://ocr.api.nhncloudservice.com"
DEFAULT_RATE_PER_S = 10.0
DEFAULT_CONCURRENCY = 16
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_BACKOFF_BASE_S = 1.0
DEFAULT_BACKOFF_CAP_S = 60.0
DEFAULT_INCLUDE = ("*.jpg", "*.jpeg", "*.png")
DEFAULT_PROGRESS_EVERY_S = 10.0
DEFAULT_MAX_OUTAGE_S = 900.0
DEFAULT_DB_URL = "sqlite:///platepipe.db"


class Secret:
    """Holds the NHN secret key; prints as `***` in reprs, f-strings and tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """`text` with every occurrence of the secret replaced by `***`."""
        return text.replace(self._value, "***") if self._value else text

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class ApiSettings:
    endpoint: str
    app_key: str
    secret_key: Secret = field(repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S


@dataclass(frozen=True)
class RunSettings:
    job: str
    db_url: str
    api: ApiSettings | None  # None for a dry run, which calls nothing
    roots: tuple[str, ...] = ()
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = ()
    rate_per_s: float = DEFAULT_RATE_PER_S
    concurrency: int = DEFAULT_CONCURRENCY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_base_s: float = DEFAULT_BACKOFF_BASE_S
    backoff_cap_s: float = DEFAULT_BACKOFF_CAP_S
    progress_every_s: float = DEFAULT_PROGRESS_EVERY_S
    quiet: bool = False
    live_progress: bool = False  # a rich panel (on a terminal) instead of log lines
    deadline: datetime | None = None  # local time at which to stop, items left pending
    max_duration_s: float | None = None
    max_requests: int | None = None  # the run's cost cap, in calls
    max_outage_s: float = DEFAULT_MAX_OUTAGE_S
    capture_pattern: str | None = None  # regex with named groups camera, date, time
    min_age_s: float = 0.0  # files modified more recently are left for the next run


@dataclass(frozen=True)
class Setting:
    """One key of the config file, and the default the CLI shows."""

    default: Any
    kind: type
    commands: tuple[str, ...]  # the commands (click names) whose option it sets
    param: str | None = None  # the option's parameter name, when not the key itself


RUN = ("run", "work", "scan", "config")
API = (*RUN, "check")  # the settings `check` needs to reach the API
EVERY_DB_COMMAND = (*API, "status", "jobs", "items", "retry", "export", "db upgrade")

SETTINGS: dict[str, Setting] = {
    "db": Setting(DEFAULT_DB_URL, str, EVERY_DB_COMMAND, "db_url"),
    "endpoint": Setting(DEFAULT_ENDPOINT, str, API),
    "app_key": Setting("", str, API),
    "secret_key_file": Setting("", str, API),
    "timeout": Setting(DEFAULT_TIMEOUT_S, float, API),
    "connect_timeout": Setting(DEFAULT_CONNECT_TIMEOUT_S, float, RUN),
    "rate": Setting(DEFAULT_RATE_PER_S, float, RUN),
    "concurrency": Setting(DEFAULT_CONCURRENCY, int, RUN),
    "max_attempts": Setting(DEFAULT_MAX_ATTEMPTS, int, RUN),
    "backoff_base": Setting(DEFAULT_BACKOFF_BASE_S, float, RUN),
    "backoff_cap": Setting(DEFAULT_BACKOFF_CAP_S, float, RUN),
    "max_outage": Setting(DEFAULT_MAX_OUTAGE_S, float, RUN),
    "include": Setting(list(DEFAULT_INCLUDE), list, RUN),
    "exclude": Setting([], list, RUN),
    "progress_every": Setting(DEFAULT_PROGRESS_EVERY_S, float, RUN),
    "capture_pattern": Setting("", str, RUN),
    "min_age": Setting(0.0, float, RUN),
    "log_json": Setting(False, bool, ("",)),  # "": the group's own option
}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The settings a TOML file gives, checked: unknown keys and wrong types are errors."""
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    for key, value in values.items():
        setting = SETTINGS.get(key)
        if setting is None:
            known = ", ".join(SETTINGS)
            raise ConfigError(f"config file {path}: unknown setting {key!r} (known: {known})")
        if not _fits(value, setting.kind):
            raise ConfigError(
                f"config file {path}: {key} should be a {setting.kind.__name__}, not {value!r}"
            )
    return values


def _fits(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def default_map(values: dict[str, Any]) -> dict[str, Any]:
    """Click's `default_map` for the group and its commands, from config-file values."""
    tree: dict[str, Any] = {}
    for key, value in values.items():
        setting = SETTINGS[key]
        for command in setting.commands:
            node = tree
            for part in command.split():
                node = node.setdefault(part, {})
            node[setting.param or key] = value
    return tree
