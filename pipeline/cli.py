"""The `platepipe` command line: thin wrappers that parse options, run, and print.

Settings resolve as flags > environment > config file > defaults: the file (`--config`)
becomes click's `default_map`, which environment variables and flags override.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import math
import os
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TypeVar

import click
from click.core import ParameterSource
from sqlalchemy.engine import make_url

from pipeline import logs
from pipeline.capture import PathPattern, PatternError
from pipeline.config import (
    CONFIG_ENV,
    SECRET_KEY_ENV,
    SETTINGS,
    ApiSettings,
    RunSettings,
    Secret,
    check_ca_bundle,
    check_endpoint,
    clean_key,
    default_map,
)
from pipeline.config import read_config_file as read_config
from pipeline.db import absolute_url, display_url
from pipeline.errors import (
    EXIT_FAILED_ITEMS,
    EXIT_OK,
    EXIT_STOPPED,
    ConfigError,
    JobNotFoundError,
    PipelineError,
)
from pipeline.records import WorkerKind
from pipeline.report import (
    format_job,
    format_jobs_line,
    job_json,
    plural,
)
from pipeline.store import Store

T = TypeVar("T")

SECONDS_PER_UNIT = {"h": 3600, "m": 60, "s": 1}
APP_KEY_ENV = SETTINGS["app_key"].env
# What a program killed by SIGPIPE ends with in a shell: the reader of our output went away.
EXIT_OUTPUT_CLOSED = 128 + 13


def run_async(main: Awaitable[T]) -> T:
    """Run a coroutine at the edge; expected errors become one line and SPEC's exit code."""
    try:
        return asyncio.run(main)
    except PipelineError as exc:
        fail(exc)
    except BrokenPipeError:
        output_closed()
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("platepipe: interrupted; run again to resume", err=True)
        sys.exit(EXIT_STOPPED)


def fail(exc: PipelineError) -> NoReturn:
    logs.error_line(str(exc))
    sys.exit(exc.exit_code)


def output_closed() -> NoReturn:
    """Standard output's reader went away (`platepipe export ... | head -1`): stop quietly,
    as cat or grep would, with no traceback and no complaint from the exit's own flush."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(EXIT_OUTPUT_CLOSED)


def default(key: str) -> Any:
    return SETTINGS[key].default


# -- parameter types -------------------------------------------------------------------------


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


def positive(kind: type) -> click.ParamType:
    return click.IntRange(min=1) if kind is int else PositiveFloat()


def env(key: str) -> str | None:
    """The environment variable of a setting: declared once, in config.SETTINGS."""
    return SETTINGS[key].env


def check_pattern(_ctx: Any, _param: Any, value: str | None) -> str | None:
    try:
        PathPattern.parse(value)
    except PatternError as exc:
        raise click.BadParameter(str(exc)) from None
    return value or None


# -- shared options --------------------------------------------------------------------------


def options(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def apply(command: Any) -> Any:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


db_option = click.option(
    "--db",
    "db_url",
    envvar=env("db"),
    default=default("db"),
    show_default=True,
    help="Database URL (env PLATEPIPE_DB), e.g. sqlite:///nightly.db or "
    "postgresql://user@host:5432/plates.",
)

job_option = click.option("--job", required=True, help="The job's name.")

scan_options = options(
    click.option(
        "--include",
        multiple=True,
        default=default("include"),
        envvar=env("include"),
        show_envvar=True,
        show_default=True,
        help="Glob of files to take (repeatable; case-insensitive). "
        "A glob with / matches the path under the root.",
    ),
    click.option(
        "--exclude",
        multiple=True,
        default=default("exclude"),
        envvar=env("exclude"),
        show_envvar=True,
        help="Glob of files or folders to leave out (repeatable).",
    ),
    click.option(
        "--capture-pattern",
        default=default("capture_pattern"),
        envvar=env("capture_pattern"),
        show_envvar=True,
        callback=check_pattern,
        help="Regex with named groups camera, date, time, searched in each path, e.g. "
        r"'/(?P<camera>cam\d+)/(?P<date>\d{8})_(?P<time>\d{6})'. Else EXIF, else mtime.",
    ),
    click.option(
        "--min-age",
        type=Duration(),
        default=default("min_age"),
        envvar=env("min_age"),
        show_envvar=True,
        help="Leave files modified less than this long ago (e.g. 10m, 90s) for the next run: "
        "a camera may still be writing them.",
    ),
)

call_options = options(
    click.option(
        "--endpoint",
        envvar=env("endpoint"),
        default=default("endpoint"),
        show_default=True,
        help="API endpoint (env NHN_OCR_ENDPOINT).",
    ),
    click.option(
        "--app-key",
        envvar=APP_KEY_ENV,
        default=default("app_key"),
        help=f"NHN appKey (env {APP_KEY_ENV}). The secret key comes only from the environment "
        f"({SECRET_KEY_ENV}) or a file named by the config's secret_key_file.",
    ),
    click.option(
        "--rate",
        type=positive(float),
        default=default("rate"),
        envvar=env("rate"),
        show_envvar=True,
        show_default=True,
        help="Requests per second, never exceeded, not even at start.",
    ),
    click.option(
        "--concurrency",
        type=positive(int),
        default=default("concurrency"),
        envvar=env("concurrency"),
        show_envvar=True,
        show_default=True,
        help="Requests in flight at once.",
    ),
    click.option(
        "--max-attempts",
        type=positive(int),
        default=default("max_attempts"),
        envvar=env("max_attempts"),
        show_envvar=True,
        show_default=True,
        help="Calls per image before a retryable error marks it failed.",
    ),
    click.option(
        "--timeout",
        type=positive(float),
        default=default("timeout"),
        envvar=env("timeout"),
        show_envvar=True,
        show_default=True,
        help="Seconds one call may take in all.",
    ),
    click.option(
        "--connect-timeout",
        type=positive(float),
        default=default("connect_timeout"),
        envvar=env("connect_timeout"),
        show_envvar=True,
        show_default=True,
        help="Seconds to open a connection.",
    ),
    click.option(
        "--ca-bundle",
        type=click.Path(dir_okay=False),
        default=default("ca_bundle"),
        envvar=env("ca_bundle"),
        show_envvar=True,
        help="PEM file of the CAs to trust for the endpoint instead of the system's "
        "(a private CA or a TLS-inspecting proxy).",
    ),
    click.option(
        "--backoff-base",
        type=positive(float),
        default=default("backoff_base"),
        envvar=env("backoff_base"),
        show_envvar=True,
        show_default=True,
        help="Seconds before the first retry; doubles per attempt, with full jitter.",
    ),
    click.option(
        "--backoff-cap",
        type=positive(float),
        default=default("backoff_cap"),
        envvar=env("backoff_cap"),
        show_envvar=True,
        show_default=True,
        help="Longest wait between two attempts of one image, in seconds.",
    ),
    click.option(
        "--deadline",
        type=ClockTime(),
        help="Stop at this local time (HH:MM, the next one to come), items left pending; exit 3.",
    ),
    click.option(
        "--max-duration",
        type=Duration(positive=True),
        help="Stop after this long (e.g. 90m, 2h, 3600), items left pending; exit 3.",
    ),
    click.option(
        "--max-requests",
        type=positive(int),
        help="Spend at most this many API calls in this run (a cost cap); exit 3 when reached.",
    ),
    click.option(
        "--max-outage",
        type=Duration(),
        default=default("max_outage"),
        envvar=env("max_outage"),
        show_envvar=True,
        show_default=True,
        help="How long to wait out an API outage (probing) before stopping with exit 3.",
    ),
    click.option(
        "--max-db-outage",
        type=Duration(),
        default=default("max_db_outage"),
        envvar=env("max_db_outage"),
        show_envvar=True,
        show_default=True,
        help="How long to wait for the database to take writes again (no call starts "
        "meanwhile) before stopping with exit 1.",
    ),
    click.option(
        "--progress-every",
        type=positive(float),
        default=default("progress_every"),
        envvar=env("progress_every"),
        show_envvar=True,
        show_default=True,
        help="Seconds between progress lines when not on a terminal.",
    ),
    click.option("--quiet", is_flag=True, help="No progress; only the final summary."),
)

run_options = options(db_option, scan_options, call_options)


def with_store(
    *, read_only: bool = False, existing: bool = False
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., T]]:
    """Open the database named by --db around an async command body, and close it after.

    `read_only` for commands that only read: nothing is created or migrated, and a SQLite file
    nobody may write still opens. `existing` for commands that write but must not create a
    database or its tables by mistake (a typo in --db)."""

    def decorate(command: Callable[..., Awaitable[T]]) -> Callable[..., T]:
        @wraps(command)
        def wrapper(db_url: str, **kwargs: Any) -> T:
            async def body() -> T:
                store = await Store.open(db_url, read_only=read_only, existing=existing)
                try:
                    return await command(store, **kwargs)
                finally:
                    await store.close()

            return run_async(body())

        return wrapper

    return decorate


def load_config(ctx: click.Context, _param: Any, path: str | None) -> None:
    if path:
        try:
            ctx.default_map = default_map(read_config(path))
        except ConfigError as exc:
            fail(exc)


# -- commands --------------------------------------------------------------------------------


class LazyGroup(click.Group):
    """A group whose heavier subcommands are imported when they are used, not at every start:
    the emulator (aiohttp's server side) stays out of `status`, `jobs` and the rest."""

    lazy: ClassVar[dict[str, str]] = {"emulator": "pipeline.emulator:emulator_command"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attribute = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attribute)
        return super().get_command(ctx, name)


@click.group(
    cls=LazyGroup,
    # No auto_envvar_prefix: only the variables README lists set anything; a stray
    # PLATEPIPE_RETRY_INCLUDE_DONE in a cron file must not re-buy the archive.
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="platepipe")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar=CONFIG_ENV,
    is_eager=True,
    expose_value=False,
    callback=load_config,
    help="TOML settings file (env PLATEPIPE_CONFIG); see config/default.toml.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
@click.option("--log-json", is_flag=True, help="Log one JSON object per line, for log shippers.")
def cli(verbose: bool, log_json: bool) -> None:
    """Recognize license plates in archived camera images through NHN Cloud's Vehicle Plate
    OCR API, and keep the results in SQLite or PostgreSQL.

    \b
    Example:
      export NHN_OCR_APP_KEY=... NHN_OCR_SECRET_KEY=...
      platepipe run --job nightly-2026-11-24 /archive/2026-11-24
    """
    logs.setup(verbose=verbose, as_json=log_json)


@cli.command()
@job_option
@click.argument("roots", nargs=-1, type=click.Path(exists=True, file_okay=True, dir_okay=True))
@run_options
@click.option("--dry-run", is_flag=True, help="Scan and say what would be sent; spend nothing.")
def run(job: str, roots: tuple[str, ...], dry_run: bool, **values: Any) -> None:
    """Scan ROOTs into job JOB and process every pending image; print a summary.

    Without ROOTs, continue an existing job (after a crash, a deadline or Ctrl-C). Images
    already done are never sent again. Credentials come from NHN_OCR_APP_KEY and
    NHN_OCR_SECRET_KEY (or the config file).

    \b
    Exit codes: 0 all done or skipped, 1 fatal (credentials, database, config), 2 usage,
    3 stopped early with items pending (signal, --deadline, --max-duration, --max-requests,
    an outage longer than --max-outage: run again to resume), 4 finished with failed items.

    \b
    Examples:
      platepipe run --job nightly-2026-11-24 /archive/2026-11-24 --rate 20
      platepipe run --job nightly-2026-11-24 --deadline 06:00
      platepipe run --job nightly-2026-11-25 /archive/2026-11-25 --dry-run
    """
    if values["quiet"]:
        logs.quiet()
    if dry_run:
        from pipeline.dryrun import dry_run as plan

        settings = run_settings(job, roots, values, api=None)
        sys.exit(run_async(plan(settings)))
    sys.exit(run_async(execute_run(process_settings(job, roots, values), kind=WorkerKind.RUN)))


def process_settings(job: str, roots: tuple[str, ...], values: dict[str, Any]) -> RunSettings:
    """Settings for a process that calls the API: credentials checked, secret scrubbed."""
    try:
        api = api_settings(values)
    except PipelineError as exc:
        fail(exc)
    logs.redact_everywhere(api.secret_key)
    return run_settings(job, roots, values, api)


# Option (parameter) name -> RunSettings field, for the options a command has.
SETTING_FIELDS = {
    "include": "include",
    "exclude": "exclude",
    "capture_pattern": "capture_pattern",
    "min_age": "min_age_s",
    "rate": "rate_per_s",
    "concurrency": "concurrency",
    "max_attempts": "max_attempts",
    "backoff_base": "backoff_base_s",
    "backoff_cap": "backoff_cap_s",
    "progress_every": "progress_every_s",
    "quiet": "quiet",
    "deadline": "deadline",
    "max_duration": "max_duration_s",
    "max_requests": "max_requests",
    "max_outage": "max_outage_s",
    "max_db_outage": "max_db_outage_s",
}


def run_settings(
    job: str, roots: tuple[str, ...], values: dict[str, Any], api: ApiSettings | None
) -> RunSettings:
    given = {field: values[name] for name, field in SETTING_FIELDS.items() if name in values}
    for field in ("include", "exclude"):
        if field in given:
            given[field] = tuple(given[field])
    live = "quiet" in values and not values["quiet"] and sys.stderr.isatty()
    return RunSettings(
        job=job, db_url=values["db_url"], api=api, roots=roots, live_progress=live, **given
    )


def api_settings(values: dict[str, Any]) -> ApiSettings:
    """The API's address and credentials; ConfigError when the keys are missing or cannot be
    sent, or the endpoint or the CA bundle cannot work. No error shows the secret."""
    secret = clean_key(os.environ.get(SECRET_KEY_ENV, ""), SECRET_KEY_ENV)
    secret_file = _from_config("secret_key_file")
    if not secret and secret_file:
        secret = clean_key(read_secret_file(secret_file), "secret_key_file")
    app_key = clean_key(values["app_key"] or "", f"the app key ({APP_KEY_ENV})")
    if not app_key or not secret:
        raise ConfigError(f"set {APP_KEY_ENV} and {SECRET_KEY_ENV} to your NHN Cloud credentials")
    return ApiSettings(
        check_endpoint(values["endpoint"]),
        app_key,
        Secret(secret),
        timeout_s=values["timeout"],
        connect_timeout_s=values["connect_timeout"],
        ca_bundle=check_ca_bundle(values["ca_bundle"]),
    )


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


def _from_config(key: str) -> Any:
    """A config-file value that has no option of its own."""
    return (click.get_current_context().default_map or {}).get(key)


async def execute_run(settings: RunSettings, *, kind: WorkerKind) -> int:
    """Open the database, run the job, print the summary; the exit code."""
    from pipeline.report import format_report
    from pipeline.runner import run_job

    store = await Store.open(settings.db_url)
    try:
        report = await run_job(settings, store, kind=kind)
    except JobNotFoundError:
        if kind != "work":
            raise
        raise JobNotFoundError(
            f"no job named {settings.job!r}: `platepipe scan --job {settings.job} ROOT...` "
            "creates it, then `work` processes it"
        ) from None
    finally:
        await store.close()
    click.echo(format_report(report))
    if report.fatal:
        logs.error_line(report.fatal)
    return report.exit_code


@cli.command()
@job_option
@click.argument(
    "roots", nargs=-1, required=True, type=click.Path(exists=True, file_okay=True, dir_okay=True)
)
@db_option
@scan_options
def scan(job: str, roots: tuple[str, ...], **values: Any) -> None:
    """Enqueue the images under ROOTs into job JOB (created if new), and call nothing.

    For several workers: scan once, then start `platepipe work` on any number of hosts
    sharing the same PostgreSQL. Scanning again adds new files and re-queues changed ones.

    \b
    Example:
      platepipe scan --job nightly-2026-11-24 /archive/2026-11-24 --db postgresql://db/plates
    """
    from pipeline.runner import scan_job

    settings = run_settings(job, roots, values, api=None)

    async def body() -> int:
        store = await Store.open(settings.db_url)
        try:
            stats = await scan_job(settings, store)
        finally:
            await store.close()
        click.echo(
            f"job {job}: {plural(stats.files, 'file')} found, {stats.queued} queued "
            "(new or changed)"
        )
        if stats.too_recent:
            files = plural(stats.too_recent, "file")
            click.echo(f"{files} modified within --min-age left for the next scan")
        if stats.recaptured:
            click.echo(
                f"camera or capture time taken from the path for {plural(stats.recaptured, 'item')}"
            )
        if stats.unreadable_dirs:
            logs.error_line(f"{plural(stats.unreadable_dirs, 'folder')} could not be listed")
            return EXIT_FAILED_ITEMS
        return EXIT_OK

    sys.exit(run_async(body()))


@cli.command()
@job_option
@db_option
@call_options
def work(job: str, **values: Any) -> None:
    """Process job JOB's pending images alongside other `work` processes, until none is left.

    Start it on as many hosts as you like against the same PostgreSQL: they claim items with
    FOR UPDATE SKIP LOCKED, split --rate (give them all the same) between the live ones, take
    over the items of a worker that died (silent for 30 s, or gone from this host), and all
    stop on a fatal answer such as bad credentials. Exit codes as for `run`.

    \b
    Example:
      platepipe work --job nightly-2026-11-24 --rate 40 --db postgresql://db/plates
    """
    if values["quiet"]:
        logs.quiet()
    sys.exit(run_async(execute_run(process_settings(job, (), values), kind=WorkerKind.WORK)))


@cli.command()
@click.option("--job", help="Only this job (default: every job).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--check",
    is_flag=True,
    help="For monitoring: exit 1 if the job is halted, 4 if it has failed items, else 0.",
)
@db_option
@with_store(read_only=True)
async def status(store: Store, job: str | None, as_json: bool, check: bool) -> None:
    """Show counts per status and error code, calls, whether a run or workers are live (pid,
    host, heartbeat), and while one is, its rate and ETA. Never blocks a run.

    With --check the exit code tells a monitor what needs a look: 1 halted by a fatal
    answer (keys, service), 4 failed items, 0 neither.

    \b
    Examples:
      platepipe status --job nightly-2026-11-24
      platepipe status --job nightly-2026-11-24 --json
      platepipe status --job nightly-2026-11-24 --check || alert "look at the night's job"
    """
    summaries = await store.summaries(job)
    if job and not summaries:
        raise JobNotFoundError(f"no job named {job!r}")
    if as_json:
        click.echo(json.dumps([job_json(s) for s in summaries], indent=2))
    else:
        click.echo("\n\n".join(format_job(s) for s in summaries) or "no jobs yet")
    if check:
        from pipeline.report import check_code

        sys.exit(check_code(summaries))  # the store closes on the way out


@cli.command()
@db_option
@with_store(read_only=True)
async def jobs(store: Store) -> None:
    """List every job with its counts and last activity.

    \b
    Example:
      platepipe jobs --db sqlite:///plates.db
    """
    summaries = await store.summaries()
    click.echo("\n".join(format_jobs_line(s) for s in summaries) or "no jobs yet")


@cli.command()
@job_option
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["pending", "running", "done", "failed", "skipped"]),
    help="Only items in this status (repeatable).",
)
@click.option(
    "--code",
    "codes",
    multiple=True,
    help="Only items with this error code or skip reason (repeatable), e.g. 4000002, timeout.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per item and line.")
@db_option
@with_store(read_only=True)
async def items(
    store: Store, job: str, statuses: tuple[str, ...], codes: tuple[str, ...], as_json: bool
) -> None:
    """List the job's items with their status, error code, attempts and message, in path
    order, without writing SQL. Tab-separated: status, code, attempts, path, message.

    \b
    Examples:
      platepipe items --job nightly-2026-11-24 --status failed
      platepipe items --job nightly-2026-11-24 --status skipped --code unreadable
      platepipe items --job nightly-2026-11-24 --code 4000002 --json | jq -r .path
    """
    from pipeline.report import format_item, item_json

    found = await store.find_job(job)
    if found is None:
        raise JobNotFoundError(f"no job named {job!r}")
    async for row in store.job_items(found, statuses, codes):
        if as_json:
            click.echo(json.dumps(item_json(row), ensure_ascii=False))
        else:
            click.echo(format_item(row))


@cli.command()
@job_option
@click.option(
    "--code",
    "codes",
    multiple=True,
    help="Only items with this error code (repeatable); names skipped items' reasons too.",
)
@click.option("--done", "include_done", is_flag=True, help="Re-queue done items too.")
@db_option
@with_store(existing=True)
async def retry(store: Store, job: str, codes: tuple[str, ...], include_done: bool) -> None:
    """Put failed items back to pending with their attempts reset; then `run` them.

    With --code, only the items that failed (or were skipped) with those codes. With --done,
    done items too (after an API upgrade, say): their results stay until new ones replace
    them.

    \b
    Examples:
      platepipe retry --job nightly-2026-11-24
      platepipe retry --job nightly-2026-11-24 --code timeout --code 5000001
      platepipe retry --job nightly-2026-11-24 --code unreadable   # after fixing permissions
      platepipe run --job nightly-2026-11-24
    """
    found = await store.find_job(job)
    if found is None:
        raise JobNotFoundError(f"no job named {job!r}")
    count = await store.requeue(found, codes, include_done=include_done)
    click.echo(
        f"{plural(count, 'item')} of {job} pending again; `platepipe run --job {job}` sends them"
    )
    if codes and not count:
        (summary,) = await store.summaries(job)
        known = ", ".join(f"{code} ({n})" for code, n in sorted(summary.error_codes.items()))
        click.echo(
            f"no failed or skipped item has code {', '.join(codes)}; "
            + (f"the job's codes: {known}" if known else "the job has no failed or skipped items"),
            err=True,
        )


@cli.command()
@job_option
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), required=True, help="Output format."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="File to write; - (the default) is standard output.",
)
@click.option(
    "--bom",
    is_flag=True,
    help="Start with a UTF-8 byte order mark, for spreadsheets that need one to show Hangul.",
)
@db_option
@with_store(read_only=True)
async def export(store: Store, job: str, fmt: str, output: str | None, bom: bool) -> None:
    """Write one row per plate read (plate_reads' columns), streamed: flat memory at any size.

    \b
    Examples:
      platepipe export --job nightly-2026-11-24 --format csv -o reads.csv
      platepipe export --job nightly-2026-11-24 --format csv --bom -o reads-excel.csv
      platepipe export --job nightly-2026-11-24 --format jsonl -o - | jq .value
    """
    from pipeline.export import BOM, export_reads

    found = await store.find_job(job)
    if found is None:
        raise JobNotFoundError(f"no job named {job!r}")
    if output is None or output == "-":
        stdout = click.get_text_stream("stdout", encoding="utf-8")
        if bom:
            stdout.write(BOM)
        await export_reads(store, found, fmt, stdout)
        stdout.flush()  # here, where a reader that went away is handled (run_async)
        return
    partial = Path(f"{output}.partial")  # a file under the real name is always complete
    try:
        with partial.open("w", encoding="utf-8", newline="") as out:
            if bom:
                out.write(BOM)
            rows = await export_reads(store, found, fmt, out)
        partial.replace(output)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise PipelineError(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"{plural(rows, 'read')} written to {output}", err=True)


@cli.command("config")
@run_options
def show_config(**values: Any) -> None:
    """Print the effective settings of `run` as TOML, and where each comes from; the secret
    and the database password redacted. The output loads back as a config file.

    Precedence: flags > environment > config file (--config) > defaults.

    \b
    Examples:
      platepipe config
      platepipe --config /etc/platepipe.toml config --rate 25
      platepipe config > mine.toml && platepipe --config mine.toml config
    """
    ctx = click.get_current_context()
    for param in ctx.command.params:
        if param.name in ("quiet", "help") or not isinstance(param, click.Option):
            continue
        key = "db" if param.name == "db_url" else param.name
        value, source = values[param.name], _source(ctx, param.name)
        if key not in SETTINGS:  # a flag of `run` alone, which a config file does not hold
            shown = "not set" if value is None else f"{value} from the {source}"
            click.echo(f"# {key}: {shown} (a flag only)")
            continue
        if key == "db":
            try:
                value = display_url(absolute_url(value))
            except PipelineError as exc:
                fail(exc)
            if make_url(value).password != make_url(values[param.name]).password:
                source += "; password hidden"
        if key == "secret_key_file":
            continue
        click.echo(f"{key} = {_toml(value)}  # {source}")
    group = ctx.find_root()
    log_json = group.params.get("log_json", False)
    click.echo(f"log_json = {_toml(log_json)}  # {_source(group, 'log_json')}")
    secret_file = _from_config("secret_key_file")
    if os.environ.get(SECRET_KEY_ENV):
        click.echo(f"# secret key: *** from the environment ({SECRET_KEY_ENV})")
    elif secret_file and os.path.lexists(secret_file):
        click.echo(f"secret_key_file = {_toml(secret_file)}  # config file")
    elif secret_file:
        click.echo("# secret_key_file: set in the config file, but names no file (not shown)")
    else:
        click.echo(f"# secret key: not set (set {SECRET_KEY_ENV} or secret_key_file)")


_SOURCES = {
    ParameterSource.COMMANDLINE: "flag",
    ParameterSource.ENVIRONMENT: "environment",
    ParameterSource.DEFAULT_MAP: "config file",
    ParameterSource.DEFAULT: "default",
}


def _source(ctx: click.Context, name: str) -> str:
    return _SOURCES.get(ctx.get_parameter_source(name), "default")


def _toml(value: Any) -> str:
    """A setting's value as TOML: JSON's strings, numbers, booleans and arrays are TOML's."""
    if value is None:
        value = ""  # an unset text setting (capture_pattern)
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, ensure_ascii=False)


@cli.command()
@db_option
@click.option(
    "--endpoint",
    envvar="NHN_OCR_ENDPOINT",
    default=default("endpoint"),
    show_default=True,
    help="API endpoint (env NHN_OCR_ENDPOINT).",
)
@click.option(
    "--app-key",
    envvar=APP_KEY_ENV,
    default=default("app_key"),
    help=f"NHN appKey (env {APP_KEY_ENV}).",
)
@click.option(
    "--timeout",
    type=positive(float),
    default=default("timeout"),
    show_default=True,
    help="Seconds the test request may take.",
)
@click.option(
    "--ca-bundle",
    type=click.Path(dir_okay=False),
    default=default("ca_bundle"),
    help="PEM file of the CAs to trust for the endpoint instead of the system's.",
)
def check(db_url: str, endpoint: str, app_key: str, timeout: float, ca_bundle: str) -> None:
    """Verify the database, the endpoint and the keys before a night; exit 0 if all are
    good, else 1. Writes nothing anywhere.

    Costs one request: an empty image, which the API answers with 4000004 (file empty) once
    it has accepted the keys, recognizing nothing. NHN may count it as one call.

    \b
    Example:
      platepipe check --db postgresql://plates@db.internal:5432/plates
    """
    from pipeline.check import run_check

    values = {
        "endpoint": endpoint,
        "app_key": app_key,
        "timeout": timeout,
        "connect_timeout": min(timeout, default("connect_timeout")),
        "ca_bundle": ca_bundle,
    }
    try:
        api = api_settings(values)
    except PipelineError as exc:
        fail(exc)
    logs.redact_everywhere(api.secret_key)
    lines, code = run_async(run_check(db_url, api))
    click.echo("\n".join(lines))
    sys.exit(code)


@cli.group("db")
def db_group() -> None:
    """Database maintenance."""


@db_group.command("upgrade")
@db_option
def db_upgrade(db_url: str) -> None:
    """Apply the schema migrations (Alembic, migrations/) up to the newest.

    `platepipe run` does this by itself; this is for preparing a database in advance. It
    says whether it changed anything.

    \b
    Example:
      platepipe db upgrade --db postgresql://plates@db.internal:5432/plates
    """

    async def body() -> tuple[str | None, str | None]:
        store = await Store.open(db_url, migrate=False)
        try:
            return await store.upgrade_schema()
        finally:
            await store.close()

    before, after = run_async(body())
    if before == after:
        click.echo(f"database is at revision {after} (newest) already: nothing to do")
    elif before is None:
        click.echo(f"platepipe tables created, at revision {after} (newest)")
    else:
        click.echo(f"database upgraded from revision {before} to {after} (newest)")


@cli.command()
@click.option(
    "--dir",
    "workdir",
    default="platepipe-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the sample images and the demo database.",
)
@click.option(
    "--images",
    default=60,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="How many sample images to make.",
)
def demo(workdir: str, images: int) -> None:
    """Run a whole job end to end on SQLite against the bundled emulator, no credentials needed.

    Makes sample images, starts the emulator on 127.0.0.1, runs a job into
    DIR/demo.db, then prints the summary and a sample SQL query over plate_reads.

    \b
    Example:
      platepipe demo --dir /tmp/platepipe-demo --images 100
    """
    from pipeline.demo import run_demo

    sys.exit(run_async(run_demo(workdir, images)))


def main() -> None:
    cli(prog_name="platepipe")
