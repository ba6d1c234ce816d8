"""`run`, `work` and `scan`: the commands that enqueue images and spend calls."""

from __future__ import annotations

import sys
from typing import Any

import click

from pipeline import logs
from pipeline.cli.app import cli, fail, from_config, job_option, run_async
from pipeline.cli.stores import execute_run, execute_scan
from pipeline.config import JobSettings, RunSettings, ScanSettings, api_settings, build
from pipeline.errors import EXIT_FAILED_ITEMS, EXIT_OK, PipelineError
from pipeline.records import WorkerKind
from pipeline.report import plural
from pipeline.settings import options_for

ROOTS = click.Path(exists=True, file_okay=True, dir_okay=True)


@cli.command()
@job_option
@click.argument("roots", nargs=-1, type=ROOTS)
@options_for("run")
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

        sys.exit(run_async(plan(build(JobSettings, values, job=job, roots=roots))))
    settings = process_settings(job, roots, values)
    sys.exit(run_async(execute_run(settings, kind=WorkerKind.RUN)))


@cli.command()
@job_option
@options_for("work")
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


def process_settings(job: str, roots: tuple[str, ...], values: dict[str, Any]) -> RunSettings:
    """Settings for a process that calls the API: credentials checked, secret scrubbed."""
    try:
        api = api_settings(values, from_config("secret_key_file"))
    except PipelineError as exc:
        fail(exc)
    logs.redact_everywhere(api.secret_key)
    live = not values["quiet"] and sys.stderr.isatty()
    return build(RunSettings, values, job=job, roots=roots, api=api, live_progress=live)


@cli.command()
@job_option
@click.argument("roots", nargs=-1, required=True, type=ROOTS)
@options_for("scan")
def scan(job: str, roots: tuple[str, ...], **values: Any) -> None:
    """Enqueue the images under ROOTs into job JOB (created if new), and call nothing.

    For several workers: scan once, then start `platepipe work` on any number of hosts
    sharing the same PostgreSQL. Scanning again adds new files and re-queues changed ones.

    \b
    Example:
      platepipe scan --job nightly-2026-11-24 /archive/2026-11-24 --db postgresql://db/plates
    """
    stats = run_async(execute_scan(build(ScanSettings, values, job=job, roots=roots)))
    click.echo(
        f"job {job}: {plural(stats.files, 'file')} found, {stats.queued} queued (new or changed)"
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
        sys.exit(EXIT_FAILED_ITEMS)
    sys.exit(EXIT_OK)
