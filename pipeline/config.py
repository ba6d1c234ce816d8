"""Settings: the frozen objects each part of a run reads, the TOML config file, and the
secret key that is never printed. The settings themselves are declared once, in settings.py.

Precedence, highest first: command-line flags, environment variables, the config file
(`--config FILE` or `PLATEPIPE_CONFIG`), then the defaults of the table. Click does the
layering: the file becomes its `default_map`, which flags and environment variables override.

The objects split by what needs them, so nothing is optional by mode: `scan` gets a
ScanSettings, a dry run a JobSettings (the scan and the calls it would make, no credentials),
`run` and `work` a RunSettings (that, the API's ApiSettings and the progress output).
"""

from __future__ import annotations

import json
import os
import ssl
import tomllib
import unicodedata
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

from pipeline.errors import ConfigError
from pipeline.settings import (
    APP_KEY_ENV,
    FILE_SETTINGS,
    SECRET_KEY_ENV,
    SETTINGS,
    Setting,
    default,
)

# Names for the few defaults other modules need outside a settings object (the table's values).
DEFAULT_DB_URL: str = default("db")
DEFAULT_INCLUDE: tuple[str, ...] = default("include")
DEFAULT_MAX_OUTAGE_S: float = default("max_outage")

S = TypeVar("S")


class Secret:
    """Holds the NHN secret key; prints as `***` in reprs, f-strings and tracebacks."""

    __slots__ = ("_forms", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        # As a JSON text may carry it too: non-ASCII letters as \uXXXX escapes.
        escaped = json.dumps(value)[1:-1]
        self._forms = tuple(dict.fromkeys(form for form in (value, escaped) if form))

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """`text` with every occurrence of the secret (as is, or JSON-escaped) replaced by
        `***`."""
        for form in self._forms:
            text = text.replace(form, "***")
        return text

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


# -- the settings objects (each field's default from the table) ------------------------------


@dataclass(frozen=True)
class ApiSettings:
    """Where the API is and how to reach it: what `check` and a client need."""

    endpoint: str
    app_key: str
    secret_key: Secret = field(repr=False)
    timeout_s: float = default("timeout")
    connect_timeout_s: float = default("connect_timeout")
    # A PEM file of the CAs to trust instead of the system's.
    ca_bundle: str | None = default("ca_bundle")


@dataclass(frozen=True, kw_only=True)
class ScanSettings:
    """What `scan` needs: the job, where its images are and which to take."""

    job: str
    db_url: str
    roots: tuple[str, ...] = ()  # none: continue the job as it is
    include: tuple[str, ...] = default("include")
    exclude: tuple[str, ...] = default("exclude")
    # A regex with named groups camera, date, time.
    capture_pattern: str | None = default("capture_pattern")
    min_age_s: float = default("min_age")  # files modified more recently wait a run
    max_db_outage_s: float = default("max_db_outage")  # wait out a database away this long


@dataclass(frozen=True, kw_only=True)
class CallSettings:
    """How calls are paced, retried and capped."""

    rate_per_s: float = default("rate")
    concurrency: int | None = default("concurrency")  # None: auto, sized to the rate
    max_concurrency: int = default("max_concurrency")
    dedupe: bool = default("dedupe")  # a content recognized already is a copy, no call
    fit: bool = default("fit")  # pictures over 5 MB re-encoded to fit, not skipped
    daily_budget: int = default("daily_budget")  # calls per local day, database-wide; 0: none
    max_attempts: int = default("max_attempts")
    backoff_base_s: float = default("backoff_base")
    backoff_cap_s: float = default("backoff_cap")
    max_outage_s: float = default("max_outage")
    deadline: datetime | None = None  # local time at which to stop, items left pending
    max_duration_s: float | None = default("max_duration")
    max_requests: int | None = default("max_requests")  # the run's cost cap, in calls


@dataclass(frozen=True, kw_only=True)
class JobSettings(ScanSettings, CallSettings):
    """A job's scan and the calls it would make, without credentials: what a dry run plans.
    Flat (by inheritance) so the runner reads `settings.rate_per_s` as it always has."""


@dataclass(frozen=True, kw_only=True)
class RunSettings(JobSettings):
    """What `run` and `work` need: the job, the API, and how to show progress."""

    api: ApiSettings
    quiet: bool = default("quiet")
    live_progress: bool = False  # a rich panel (on a terminal) instead of log lines
    progress_every_s: float = default("progress_every")


def build(kind: type[S], values: dict[str, Any], **given: Any) -> S:
    """A settings object of `kind` from click's values (keyed by parameter name): each field
    the table maps an option to, plus `given` (the job, the roots, the API)."""
    names = {f.name for f in fields(kind)}  # type: ignore[arg-type]
    taken: dict[str, Any] = {}
    for setting in SETTINGS.values():
        if setting.field in names and setting.name in values:
            value = values[setting.name]
            taken[setting.field] = tuple(value) if setting.kind is list else value
    return kind(**{**taken, **given})


# -- the API's address, CA bundle and keys ----------------------------------------------------


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


def api_settings(values: dict[str, Any], secret_key_file: str | None) -> ApiSettings:
    """The API's address and credentials from click's values and the config's
    secret_key_file; ConfigError when the keys are missing or cannot be sent, or the endpoint
    or the CA bundle cannot work. No error shows the secret."""
    secret = load_secret(secret_key_file)
    app_key = clean_key(values["app_key"] or "", f"the app key ({APP_KEY_ENV})")
    if not app_key or not secret:
        raise ConfigError(f"set {APP_KEY_ENV} and {SECRET_KEY_ENV} to your NHN Cloud credentials")
    return build(
        ApiSettings,
        values,
        endpoint=check_endpoint(values["endpoint"]),
        app_key=app_key,
        secret_key=Secret(secret),
        ca_bundle=check_ca_bundle(values["ca_bundle"]),
    )


def load_secret(secret_key_file: str | None) -> str:
    """The secret key: NHN_OCR_SECRET_KEY, else the text of the config's secret_key_file;
    "" when neither is set."""
    secret = clean_key(os.environ.get(SECRET_KEY_ENV, ""), SECRET_KEY_ENV)
    if not secret and secret_key_file:
        secret = clean_key(read_secret_file(secret_key_file), "secret_key_file")
    return secret


def secret_source(secret_key_file: str | None) -> str:
    """Where the secret key would come from, for `platepipe config`: "environment", "file",
    "missing file" or "" (nowhere). Never the key itself."""
    if os.environ.get(SECRET_KEY_ENV):
        return "environment"
    if secret_key_file:
        return "file" if os.path.lexists(secret_key_file) else "missing file"
    return ""


def read_secret_file(path: str) -> str:
    """The text of the config's secret_key_file. A value that names no file is most likely
    the key itself, pasted where its file's path belongs: the error never shows it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        if not os.path.lexists(path):
            raise ConfigError(
                "secret_key_file names no file (its value is not shown): it must be the path "
                "of a file holding the secret key, not the key itself"
            ) from None
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read secret_key_file {path}: {reason}") from None


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


# -- the config file --------------------------------------------------------------------------


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
        setting = FILE_SETTINGS.get(key)
        if setting is None:
            known = ", ".join(FILE_SETTINGS)
            raise ConfigError(f"config file {path}: unknown setting {key!r} (known: {known})")
        if not _fits(value, setting):
            raise ConfigError(
                f"config file {path}: {key} should be a {_kind_name(setting)}, not {value!r}"
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


def _kind_name(setting: Setting) -> str:
    if setting.kind is object and setting.click_type is not None:
        return setting.click_type.name
    return setting.kind.__name__


def _fits(value: Any, setting: Setting) -> bool:
    kind = setting.kind
    if kind is object and setting.click_type is not None:
        try:
            setting.click_type.convert(value, None, None)
        except click.BadParameter:
            return False
        return True
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
            node[setting.name] = value
    return tree
