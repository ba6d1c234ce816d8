"""Run settings, and the secret key that must never be printed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

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
    api: ApiSettings
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
    deadline: datetime | None = None  # local time at which to stop, items left pending
    max_duration_s: float | None = None
    max_requests: int | None = None  # the run's cost cap, in calls
    max_outage_s: float = DEFAULT_MAX_OUTAGE_S
