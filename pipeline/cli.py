"""The `platepipe` command line: thin wrappers that parse options, run, and print."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import wraps
from typing import Any, NoReturn, TypeVar

import click

from pipeline import config as defaults
from pipeline.config import ApiSettings, RunSettings, Secret
from pipeline.db import DEFAULT_DB_URL
from pipeline.emulator import emulator_command
from pipeline.errors import EXIT_STOPPED, ConfigError, PipelineError
from pipeline.report import format_job, format_report, job_json
from pipeline.store import Store

T = TypeVar("T")

SECONDS_PER_UNIT = {"h": 3600, "m": 60, "s": 1}
APP_KEY_ENV = "NHN_OCR_APP_KEY"
SECRET_KEY_ENV = "NHN_OCR_SECRET_KEY"


def run_async(main: Awaitable[T]) -> T:
    """Run a coroutine at the edge; expected errors become one line and SPEC's exit code."""
    try:
        return asyncio.run(main)
    except PipelineError as exc:
        fail(exc)
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("platepipe: interrupted; run again to resume", err=True)
        sys.exit(EXIT_STOPPED)


def fail(exc: PipelineError) -> NoReturn:
    click.echo(f"platepipe: error: {exc}", err=True)
    sys.exit(exc.exit_code)


def db_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        "db_url",
        envvar="PLATEPIPE_DB",
        default=DEFAULT_DB_URL,
        show_default=True,
        help="Database URL (env PLATEPIPE_DB), e.g. sqlite:///nightly.db or "
        "postgresql://user@host:5432/plates.",
    )(command)


def with_store(command: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    """Open the database named by --db around an async command body, and close it after."""

    @wraps(command)
    def wrapper(db_url: str, **kwargs: Any) -> T:
        async def body() -> T:
            store = await Store.open(db_url)
            try:
                return await command(store, **kwargs)
            finally:
                await store.close()

        return run_async(body())

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="platepipe")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
def cli(verbose: bool) -> None:
    """Recognize license plates in archived camera images through NHN Cloud's Vehicle Plate
    OCR API, and keep the results in SQLite or PostgreSQL.

    \b
    Example:
      export NHN_OCR_APP_KEY=... NHN_OCR_SECRET_KEY=...
      platepipe run --job nightly-2026-11-24 /archive/2026-11-24
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    # aiohttp's access log and alembic's chatter are not an operator's business by default.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


class Duration(click.ParamType):
    """Seconds, from `3600`, `90s`, `45m`, `2h` or `1h30m`."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return float(text)
        parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            self.fail(f"{value!r} is not a duration like 90m, 2h, 1h30m or 3600", param, ctx)
        return sum(float(n) * SECONDS_PER_UNIT[u] for n, u in parts)


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
    return click.IntRange(min=1) if kind is int else click.FloatRange(min=0, min_open=True)


@cli.command()
@click.option("--job", required=True, help="Job name: created on first use, continued after.")
@click.argument("roots", nargs=-1, type=click.Path(exists=True, file_okay=True, dir_okay=True))
@db_option
@click.option(
    "--endpoint",
    envvar="NHN_OCR_ENDPOINT",
    default=defaults.DEFAULT_ENDPOINT,
    show_default=True,
    help="API endpoint (env NHN_OCR_ENDPOINT).",
)
@click.option(
    "--rate",
    type=positive(float),
    default=defaults.DEFAULT_RATE_PER_S,
    show_default=True,
    help="Requests per second, never exceeded, not even at start.",
)
@click.option(
    "--concurrency",
    type=positive(int),
    default=defaults.DEFAULT_CONCURRENCY,
    show_default=True,
    help="Requests in flight at once.",
)
@click.option(
    "--max-attempts",
    type=positive(int),
    default=defaults.DEFAULT_MAX_ATTEMPTS,
    show_default=True,
    help="Calls per image before a retryable error marks it failed.",
)
@click.option(
    "--timeout",
    type=positive(float),
    default=defaults.DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Seconds one call may take in all.",
)
@click.option(
    "--include",
    multiple=True,
    help="Glob of files to take (repeatable; case-insensitive). "
    "Default: *.jpg *.jpeg *.png. A glob with / matches the path under the root.",
)
@click.option(
    "--exclude", multiple=True, help="Glob of files or folders to leave out (repeatable)."
)
@click.option(
    "--backoff-base",
    "backoff_base_s",
    type=positive(float),
    default=defaults.DEFAULT_BACKOFF_BASE_S,
    show_default=True,
    help="Seconds before the first retry; doubles per attempt, with full jitter.",
)
@click.option(
    "--backoff-cap",
    "backoff_cap_s",
    type=positive(float),
    default=defaults.DEFAULT_BACKOFF_CAP_S,
    show_default=True,
    help="Longest wait between two attempts of one image, in seconds.",
)
@click.option(
    "--deadline",
    type=ClockTime(),
    help="Stop at this local time (HH:MM, the next one to come), items left pending; exit 3.",
)
@click.option(
    "--max-duration",
    "max_duration_s",
    type=Duration(),
    help="Stop after this long (e.g. 90m, 2h, 3600), items left pending; exit 3.",
)
@click.option(
    "--max-requests",
    type=positive(int),
    help="Spend at most this many API calls in this run (a cost cap); exit 3 when reached.",
)
@click.option(
    "--max-outage",
    "max_outage_s",
    type=Duration(),
    default=str(int(defaults.DEFAULT_MAX_OUTAGE_S)),
    show_default=True,
    help="How long to wait out an API outage (probing) before stopping with exit 3.",
)
@click.option("--quiet", is_flag=True, help="No progress lines; only the final summary.")
def run(job: str, roots: tuple[str, ...], db_url: str, endpoint: str, **options: Any) -> None:
    """Scan ROOTs into job JOB and process every pending image; print a summary.

    Without ROOTs, continue an existing job (after a crash, a deadline or Ctrl-C). Images
    already done are never sent again. Credentials come from NHN_OCR_APP_KEY and
    NHN_OCR_SECRET_KEY.

    \b
    Exit codes: 0 all done or skipped, 1 fatal (credentials, database), 2 usage,
    3 stopped early with items pending (signal, --deadline, --max-duration, --max-requests,
    an outage longer than --max-outage: run again to resume), 4 finished with failed items.

    \b
    Example:
      platepipe run --job nightly-2026-11-24 /archive/2026-11-24 --rate 20 --db sqlite:///plates.db
    """
    if options["quiet"]:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        api = api_settings(endpoint, options.pop("timeout"))
    except PipelineError as exc:
        fail(exc)
    settings = RunSettings(
        job=job,
        db_url=db_url,
        api=api,
        roots=roots,
        include=options.pop("include") or defaults.DEFAULT_INCLUDE,
        exclude=options.pop("exclude"),
        rate_per_s=options.pop("rate"),
        **options,
    )
    sys.exit(run_async(execute_run(settings)))


def api_settings(endpoint: str, timeout_s: float) -> ApiSettings:
    app_key = os.environ.get(APP_KEY_ENV, "")
    secret_key = os.environ.get(SECRET_KEY_ENV, "")
    if not app_key or not secret_key:
        raise ConfigError(f"set {APP_KEY_ENV} and {SECRET_KEY_ENV} to your NHN Cloud credentials")
    return ApiSettings(endpoint, app_key, Secret(secret_key), timeout_s=timeout_s)


async def execute_run(settings: RunSettings) -> int:
    """Open the database, run the job, print the summary; the exit code."""
    from pipeline.runner import run_job

    store = await Store.open(settings.db_url)
    try:
        report = await run_job(settings, store)
    finally:
        await store.close()
    click.echo(format_report(report))
    if report.fatal:
        click.echo(f"platepipe: error: {report.fatal}", err=True)
    return report.exit_code


@cli.command()
@click.option("--job", help="Only this job (default: every job).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@db_option
@with_store
async def status(store: Store, job: str | None, as_json: bool) -> None:
    """Show counts per status and error code for a job, even while it runs.

    \b
    Example:
      platepipe status --job nightly-2026-11-24
      platepipe status --job nightly-2026-11-24 --json
    """
    summaries = await store.summaries(job)
    if job and not summaries:
        raise ConfigError(f"no job named {job!r}")
    if as_json:
        click.echo(json.dumps([job_json(s) for s in summaries], indent=2))
        return
    click.echo("\n\n".join(format_job(s) for s in summaries) or "no jobs yet")


@cli.command()
@db_option
@with_store
async def jobs(store: Store) -> None:
    """List every job with its counts and last activity.

    \b
    Example:
      platepipe jobs --db sqlite:///plates.db
    """
    summaries = await store.summaries()
    if not summaries:
        click.echo("no jobs yet")
    for s in summaries:
        counts = ", ".join(f"{k} {v}" for k, v in s.counts.items() if v)
        last = s.last_activity.isoformat(sep=" ", timespec="seconds") if s.last_activity else "-"
        click.echo(f"{s.name}\t{s.total} items ({counts or 'empty'})\tlast activity {last} UTC")


@cli.group("db")
def db_group() -> None:
    """Database maintenance."""


@db_group.command("upgrade")
@db_option
@with_store
async def db_upgrade(store: Store) -> None:
    """Apply the schema migrations (Alembic, migrations/) up to the newest.

    `platepipe run` does this by itself; this is for preparing a database in advance.

    \b
    Example:
      platepipe db upgrade --db postgresql://plates@db.internal:5432/plates
    """
    (revision,) = (await store.query("SELECT version_num FROM alembic_version"))[0]
    click.echo(f"database is at revision {revision} (newest)")


cli.add_command(emulator_command)


@cli.command()
@click.option(
    "--dir",
    "workdir",
    default="platepipe-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the sample images and the demo database.",
)
@click.option("--images", default=60, show_default=True, type=click.IntRange(1, 100_000))
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
