"""`status`, `jobs`, `items`, `retry`, `export` and `usage`: the commands that show a job or
the calls spent, and the one that sends a job's failed items again."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from pipeline.budget import spend_today
from pipeline.cli.app import cli, job_option
from pipeline.cli.stores import with_store
from pipeline.errors import JobNotFoundError, PipelineError
from pipeline.export import FORMATS
from pipeline.records import ItemStatus
from pipeline.report import format_job, format_jobs_line, job_json, plural
from pipeline.settings import options_for
from pipeline.store import Store


@cli.command()
@click.option("--job", help="Only this job (default: every job).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--check",
    is_flag=True,
    help="For monitoring: exit 1 if the job is halted, 4 if it has failed items, else 0.",
)
@options_for("status")
@with_store(read_only=True)
async def status(
    store: Store, job: str | None, as_json: bool, check: bool, daily_budget: int
) -> None:
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
        if daily_budget:  # --daily-budget (or its variable, or the config file)
            click.echo((await spend_today(store, daily_budget) or "").strip())
    if check:
        from pipeline.report import check_code

        sys.exit(check_code(summaries))  # the store closes on the way out


@cli.command()
@options_for("jobs")
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
    type=click.Choice([status.value for status in ItemStatus]),
    help="Only items in this status (repeatable).",
)
@click.option(
    "--code",
    "codes",
    multiple=True,
    help="Only items with this error code or skip reason (repeatable), e.g. 4000002, timeout.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per item and line.")
@options_for("items")
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

    found = await store.job(job)
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
@options_for("retry")
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
    found = await store.job(job)
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
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True, help="Output format.")
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
@options_for("export")
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

    found = await store.job(job)
    if output is None or output == "-":
        stdout = click.get_text_stream("stdout", encoding="utf-8")  # type: ignore[operator]
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


@cli.command()
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="The last N local calendar days, today included.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@options_for("usage")
@with_store(read_only=True)
async def usage(store: Store, days: int, as_json: bool, daily_budget: int) -> None:
    """Show the calls that reached the API per local calendar day and job, with the copies
    (pictures recognized already: no call) and fits (pictures over 5 MB re-encoded), each
    day's total and the total, newest day first. Reads the `usage` table; writes nothing.
    With a --daily-budget (or its variable, or the config file), today's spend against it.

    \b
    Examples:
      platepipe usage
      platepipe usage --days 7 --json | jq .total.calls
      platepipe usage --daily-budget 5000
    """
    from pipeline.usage import first_day, format_usage, local_day, usage_json

    today = local_day()
    first = first_day(days, today)
    rows = await store.usage_since(first)
    if as_json:
        report = usage_json(rows, days, first)
        if daily_budget:
            spent = await store.day_spend(today)
            report["budget"] = {"day": today, "limit": daily_budget, "spent": spent}
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(format_usage(rows, days))
    if daily_budget:
        click.echo((await spend_today(store, daily_budget) or "").strip())
