"""The one table of settings: each written once, with everything derived from it.

A row gives a setting's TOML key (its option is the key with dashes), type, default, unit,
help, environment variable, the commands that have its option, and its field in the frozen
settings objects of config.py. From the table come: the click options of every command
(`options_for`), the checks of a config file and click's `default_map` (config.py), the
environment names README documents, and the settings objects' defaults and construction.
config/default.toml is the table written out for users to copy; a test holds the two equal.

To add a setting: one row here, its field in config.py's objects, a line in
config/default.toml and README's tables (tests name any that is missing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pipeline.paramtypes import (
    ClockTime,
    Concurrency,
    Duration,
    Setting,
    check_pattern,
    positive,
)

# The commands an option belongs to, by click name ("" is the group itself).
SCAN = ("run", "scan", "config")  # what is scanned
CALLS = ("run", "work", "config")  # how calls are made and paced
API = (*CALLS, "check")  # where the API is and how to reach it
EVERY_DB_COMMAND = (
    *CALLS,
    "scan",
    "check",
    "status",
    "jobs",
    "items",
    "retry",
    "export",
    "usage",
    "db upgrade",
)


def _run_env(key: str) -> str:
    return f"PLATEPIPE_RUN_{key.upper()}"


SECRET_KEY_ENV = "NHN_OCR_SECRET_KEY"  # read by config.load_secret, never an option
APP_KEY_ENV = "NHN_OCR_APP_KEY"
CONFIG_ENV = "PLATEPIPE_CONFIG"  # the group's --config, which reads the file itself

_ROWS = (
    Setting(
        "db",
        str,
        "sqlite:///platepipe.db",
        "Database URL (env PLATEPIPE_DB), e.g. sqlite:///nightly.db or "
        "postgresql://user@host:5432/plates.",
        EVERY_DB_COMMAND,
        field="db_url",
        env="PLATEPIPE_DB",
        param="db_url",
    ),
    Setting(
        "include",
        list,
        ["*.jpg", "*.jpeg", "*.png"],
        "Glob of files to take (repeatable; case-insensitive). "
        "A glob with / matches the path under the root.",
        SCAN,
        field="include",
        env=_run_env("include"),
        click_args={"multiple": True},
    ),
    Setting(
        "exclude",
        list,
        [],
        "Glob of files or folders to leave out (repeatable).",
        SCAN,
        field="exclude",
        env=_run_env("exclude"),
        click_args={"multiple": True},
    ),
    Setting(
        "capture_pattern",
        str,
        "",
        "Regex with named groups camera, date, time, searched in each path, e.g. "
        r"'/(?P<camera>cam\d+)/(?P<date>\d{8})_(?P<time>\d{6})'. Else EXIF, else mtime.",
        SCAN,
        field="capture_pattern",
        env=_run_env("capture_pattern"),
        click_args={"callback": check_pattern},
    ),
    Setting(
        "min_age",
        float,
        0.0,
        "Leave files modified less than this long ago (e.g. 10m, 90s) for the next run: "
        "a camera may still be writing them.",
        SCAN,
        field="min_age_s",
        unit="s",
        env=_run_env("min_age"),
        click_type=Duration(),
    ),
    Setting(
        "endpoint",
        str,
        "https://ocr.api.nhncloudservice.com",
        "API endpoint (env NHN_OCR_ENDPOINT).",
        API,
        field="endpoint",
        env="NHN_OCR_ENDPOINT",
    ),
    Setting(
        "app_key",
        str,
        "",
        f"NHN appKey (env {APP_KEY_ENV}). The secret key comes only from the environment "
        f"({SECRET_KEY_ENV}) or a file named by the config's secret_key_file.",
        API,
        field="app_key",
        env=APP_KEY_ENV,
        variants={"check": {"help": f"NHN appKey (env {APP_KEY_ENV})."}},
    ),
    Setting(
        "secret_key_file",
        str,
        "",
        "A file holding the secret key (config file only).",
        API,
        option=False,
        path=True,
    ),
    Setting(
        "rate",
        float,
        10.0,
        "Requests per second, never exceeded, not even at start.",
        CALLS,
        field="rate_per_s",
        unit="1/s",
        env=_run_env("rate"),
        click_type=positive(float),
    ),
    Setting(
        "concurrency",
        object,
        "auto",
        "Requests in flight at once: auto grows and shrinks them to hold --rate whatever the "
        "API's latency (up to --max-concurrency); a number pins it.",
        CALLS,
        field="concurrency",
        env=_run_env("concurrency"),
        click_type=Concurrency(),
    ),
    Setting(
        "max_concurrency",
        int,
        256,
        "Most requests in flight when --concurrency is auto.",
        CALLS,
        field="max_concurrency",
        env=_run_env("max_concurrency"),
        click_type=positive(int),
    ),
    Setting(
        "dedupe",
        bool,
        True,
        "Pay once per content: a picture whose bytes (SHA-256) were recognized already, in any "
        "job of the database, is done from that result with no call. --no-dedupe sends it.",
        CALLS,
        field="dedupe",
        env=_run_env("dedupe"),
        flag="--dedupe/--no-dedupe",
    ),
    Setting(
        "fit",
        bool,
        True,
        "Send pictures over the API's 5 MB re-encoded (JPEG quality steps, then downscaled) to "
        "fit, boxes mapped back to the original; --no-fit skips them as too_large.",
        CALLS,
        field="fit",
        env=_run_env("fit"),
        flag="--fit/--no-fit",
    ),
    Setting(
        "daily_budget",
        int,
        0,
        "Calls per local calendar day across every run, job and worker of the database; when "
        "spent, stop with exit 3, images left pending. 0: no budget.",
        (*CALLS, "status", "usage"),  # those two show the day's spend against it
        field="daily_budget",
        unit="calls",
        env=_run_env("daily_budget"),
        click_type=click.IntRange(min=0),
        variants={
            command: {"help": "Show today's calls (all jobs) against this daily budget. 0: not."}
            for command in ("status", "usage")
        },
    ),
    Setting(
        "max_attempts",
        int,
        5,
        "Calls per image before a retryable error marks it failed.",
        CALLS,
        field="max_attempts",
        env=_run_env("max_attempts"),
        click_type=positive(int),
    ),
    Setting(
        "timeout",
        float,
        30.0,
        "Seconds one call may take in all.",
        API,
        field="timeout_s",
        unit="s",
        env=_run_env("timeout"),
        click_type=positive(float),
        variants={"check": {"help": "Seconds the test request may take.", "envvar": None}},
    ),
    Setting(
        "connect_timeout",
        float,
        10.0,
        "Seconds to open a connection.",
        CALLS,
        field="connect_timeout_s",
        unit="s",
        env=_run_env("connect_timeout"),
        click_type=positive(float),
    ),
    Setting(
        "ca_bundle",
        str,
        "",
        "PEM file of the CAs to trust for the endpoint instead of the system's "
        "(a private CA or a TLS-inspecting proxy).",
        API,
        field="ca_bundle",
        env=_run_env("ca_bundle"),
        click_type=click.Path(dir_okay=False),
        path=True,
        variants={
            "check": {
                "help": "PEM file of the CAs to trust for the endpoint instead of the system's.",
                "envvar": None,
            }
        },
    ),
    Setting(
        "backoff_base",
        float,
        1.0,
        "Seconds before the first retry; doubles per attempt, with full jitter.",
        CALLS,
        field="backoff_base_s",
        unit="s",
        env=_run_env("backoff_base"),
        click_type=positive(float),
    ),
    Setting(
        "backoff_cap",
        float,
        60.0,
        "Longest wait between two attempts of one image, in seconds.",
        CALLS,
        field="backoff_cap_s",
        unit="s",
        env=_run_env("backoff_cap"),
        click_type=positive(float),
    ),
    Setting(
        "deadline",
        str,
        None,
        "Stop at this local time (HH:MM, the next one to come), items left pending; exit 3.",
        CALLS,
        field="deadline",
        click_type=ClockTime(),
        toml=False,
    ),
    Setting(
        "max_duration",
        float,
        None,
        "Stop after this long (e.g. 90m, 2h, 3600), items left pending; exit 3.",
        CALLS,
        field="max_duration_s",
        unit="s",
        click_type=Duration(positive=True),
        toml=False,
    ),
    Setting(
        "max_requests",
        int,
        None,
        "Spend at most this many API calls in this run (a cost cap); exit 3 when reached.",
        CALLS,
        field="max_requests",
        unit="calls",
        click_type=positive(int),
        toml=False,
    ),
    Setting(
        "max_outage",
        float,
        900.0,
        "How long to wait out an API outage (probing) before stopping with exit 3.",
        CALLS,
        field="max_outage_s",
        unit="s",
        env=_run_env("max_outage"),
        click_type=Duration(),
    ),
    Setting(
        "max_db_outage",
        float,
        300.0,
        "How long to wait for the database to take writes again (no call starts "
        "meanwhile) before stopping with exit 1.",
        CALLS,
        field="max_db_outage_s",
        unit="s",
        env=_run_env("max_db_outage"),
        click_type=Duration(),
    ),
    Setting(
        "progress_every",
        float,
        10.0,
        "Seconds between progress lines when not on a terminal.",
        CALLS,
        field="progress_every_s",
        unit="s",
        env=_run_env("progress_every"),
        click_type=positive(float),
    ),
    Setting(
        "quiet",
        bool,
        False,
        "No progress; only the final summary.",
        CALLS,
        field="quiet",
        toml=False,
        click_args={"is_flag": True},
    ),
    Setting(
        "log_json",
        bool,
        False,
        "Log one JSON object per line, for log shippers.",
        ("",),
        click_args={"is_flag": True},
    ),
)

SETTINGS: dict[str, Setting] = {row.key: row for row in _ROWS}
# The keys a config file may hold, in the table's order.
FILE_SETTINGS: dict[str, Setting] = {key: row for key, row in SETTINGS.items() if row.toml}


def default(key: str) -> Any:
    """A setting's default as the settings objects hold it (see Setting.value)."""
    return SETTINGS[key].value


def options_for(command: str) -> Callable[[Any], Any]:
    """A decorator adding the options of the settings `command` has, in the table's order."""
    rows = [row for row in _ROWS if command in row.commands and row.option]

    def apply(function: Any) -> Any:
        for row in reversed(rows):
            function = row.option_for(command)(function)
        return function

    return apply


def environment_names() -> list[str]:
    """Every environment variable a setting reads, and the secret's: README's table."""
    return [*(row.env for row in _ROWS if row.env), SECRET_KEY_ENV, CONFIG_ENV]
