"""Settings: their defaults, the TOML config file, and the secret key that is never printed.

Precedence, highest first: command-line flags, environment variables, the config file
(`--config FILE` or `PLATEPIPE_CONFIG`), then the defaults below. Click does the layering: the
file becomes its `default_map`, which flags and environment variables override.
"""

from __future__ import annotations

import os
import ssl
import tomllib
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
DEFAULT_MAX_DB_OUTAGE_S = 300.0
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
    ca_bundle: str | None = None  # PEM file of the CAs to trust instead of the system's


def check_endpoint(endpoint: str) -> str:
    """`endpoint` if a call can be made to it: http or https, and a host; else ConfigError."""
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"endpoint {endpoint!r} is not a URL: {exc}") from exc
    if "://" not in endpoint:
        # `ocr.example.com` or `localhost:8080`: urlsplit reads no scheme, or the host as one.
        raise ConfigError(f"endpoint {endpoint!r} has no scheme: write https://{endpoint}")
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"endpoint {endpoint!r}: the scheme must be http or https")
    if not host:
        raise ConfigError(f"endpoint {endpoint!r} has no host")
    return endpoint


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext | None:
    """The TLS context trusting only the CAs of `ca_bundle` (a PEM file), as curl's --cacert;
    None for the system's CAs. The file is vetted first, by check_ca_bundle."""
    if not ca_bundle:
        return None
    return ssl.create_default_context(cafile=ca_bundle)  # load_verify_locations(cafile=...)


def check_ca_bundle(ca_bundle: str | None) -> str | None:
    """`ca_bundle` if it is a readable PEM file of certificates; else ConfigError."""
    if not ca_bundle:
        return None
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=ca_bundle)
    except ssl.SSLError as exc:  # an OSError too: caught first
        raise ConfigError(f"ca_bundle {ca_bundle} is not a PEM file of certificates") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read ca_bundle {ca_bundle}: {exc.strerror or exc}") from exc
    if not context.get_ca_certs():
        raise ConfigError(f"ca_bundle {ca_bundle} holds no CA certificate")
    return ca_bundle


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
    max_db_outage_s: float = DEFAULT_MAX_DB_OUTAGE_S  # wait out a database away this long
    capture_pattern: str | None = None  # regex with named groups camera, date, time


@dataclass(frozen=True)
class Setting:
    """One key of the config file, and the default the CLI shows."""

    default: Any
    kind: type
    commands: tuple[str, ...]  # the commands (click names) whose option it sets
    param: str | None = None  # the option's parameter name, when not the key itself
    env: str | None = None  # the environment variable that sets it, if any (README lists them)
    path: bool = False  # a file path: relative in a config file means beside that file


RUN = ("run", "work", "scan", "config")
EVERY_DB_COMMAND = (*RUN, "status", "jobs", "retry", "export", "db upgrade")


def _run_env(key: str) -> str:
    return f"PLATEPIPE_RUN_{key.upper()}"


SETTINGS: dict[str, Setting] = {
    "db": Setting(DEFAULT_DB_URL, str, EVERY_DB_COMMAND, "db_url", env="PLATEPIPE_DB"),
    "endpoint": Setting(DEFAULT_ENDPOINT, str, RUN, env="NHN_OCR_ENDPOINT"),
    "app_key": Setting("", str, RUN, env="NHN_OCR_APP_KEY"),
    "secret_key_file": Setting("", str, RUN, path=True),
    "timeout": Setting(DEFAULT_TIMEOUT_S, float, RUN, env=_run_env("timeout")),
    "connect_timeout": Setting(
        DEFAULT_CONNECT_TIMEOUT_S, float, RUN, env=_run_env("connect_timeout")
    ),
    "ca_bundle": Setting("", str, RUN, env=_run_env("ca_bundle"), path=True),
    "rate": Setting(DEFAULT_RATE_PER_S, float, RUN, env=_run_env("rate")),
    "concurrency": Setting(DEFAULT_CONCURRENCY, int, RUN, env=_run_env("concurrency")),
    "max_attempts": Setting(DEFAULT_MAX_ATTEMPTS, int, RUN, env=_run_env("max_attempts")),
    "backoff_base": Setting(DEFAULT_BACKOFF_BASE_S, float, RUN, env=_run_env("backoff_base")),
    "backoff_cap": Setting(DEFAULT_BACKOFF_CAP_S, float, RUN, env=_run_env("backoff_cap")),
    "max_outage": Setting(DEFAULT_MAX_OUTAGE_S, float, RUN, env=_run_env("max_outage")),
    "max_db_outage": Setting(DEFAULT_MAX_DB_OUTAGE_S, float, RUN, env=_run_env("max_db_outage")),
    "include": Setting(list(DEFAULT_INCLUDE), list, RUN, env=_run_env("include")),
    "exclude": Setting([], list, RUN, env=_run_env("exclude")),
    "progress_every": Setting(DEFAULT_PROGRESS_EVERY_S, float, RUN, env=_run_env("progress_every")),
    "capture_pattern": Setting("", str, RUN, env=_run_env("capture_pattern")),
    "log_json": Setting(False, bool, ("",)),  # "": the group's own option
}
# Read by the CLI itself, not through a setting.
CONFIG_ENV = "PLATEPIPE_CONFIG"
SECRET_KEY_ENV = "NHN_OCR_SECRET_KEY"


def clean_key(value: str, name: str) -> str:
    """An NHN key without the whitespace around it (a file saved on Windows ends in CR LF).
    A control character left inside is a ConfigError that never shows the key: no request
    could carry it, and every call would fail."""
    key = value.strip()
    if any(unicodedata.category(ch) == "Cc" for ch in key):
        raise ConfigError(
            f"{name} holds a control character inside the key (not shown); "
            "save it again as one line of plain text"
        )
    return key


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
    return _beside(values, Path(path).resolve().parent)


def _beside(values: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Relative paths in a config file name files beside it, wherever platepipe is started:
    `secret_key_file = "key.txt"` and `db = "sqlite:///plates.db"` as much as absolute ones."""
    resolved = dict(values)
    for key, value in values.items():
        if SETTINGS[key].path and value and not os.path.isabs(value):
            resolved[key] = str(folder / value)
    db_url = values.get("db")
    if db_url and db_url.startswith("sqlite") and "///" in db_url:
        head, _, file = db_url.partition("///")
        if file and not file.startswith(("/", ":", "file:")):
            resolved["db"] = f"{head}///{folder / file}"
    return resolved


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
