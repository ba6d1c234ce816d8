"""Where the CLI opens the database: each opener small and on its own, so that the store's
lifetime (open, use, close) is written in these few places only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

import click

from pipeline import logs
from pipeline.cli.app import run_async
from pipeline.config import RunSettings, ScanSettings
from pipeline.errors import JobNotFoundError
from pipeline.records import WorkerKind
from pipeline.scanner import ScanStats
from pipeline.store import Store

T = TypeVar("T")


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
                async with Store.connect(db_url, read_only=read_only, existing=existing) as store:
                    return await command(store, **kwargs)

            return run_async(body())

        return wrapper

    return decorate


async def execute_run(settings: RunSettings, *, kind: WorkerKind) -> int:
    """Open the database, run the job, print the summary; the exit code."""
    from pipeline.report import format_report
    from pipeline.runner import run_job

    try:
        async with Store.connect(settings.db_url, ride_out_s=settings.max_db_outage_s) as store:
            report = await run_job(settings, store, kind=kind)
    except JobNotFoundError:
        if kind != WorkerKind.WORK:
            raise
        raise JobNotFoundError(
            f"no job named {settings.job!r}: `platepipe scan --job {settings.job} ROOT...` "
            "creates it, then `work` processes it"
        ) from None
    click.echo(format_report(report))
    if report.fatal:
        logs.error_line(report.fatal)
    return report.exit_code


async def execute_scan(settings: ScanSettings) -> ScanStats:
    """Open the database and enqueue the roots' images into the job."""
    from pipeline.runner import scan_job

    async with Store.connect(settings.db_url, ride_out_s=settings.max_db_outage_s) as store:
        return await scan_job(settings, store)


async def upgrade_schema(db_url: str) -> tuple[str | None, str | None]:
    """Open the database without migrating it, then migrate it: the revisions before, after."""
    async with Store.connect(db_url, migrate=False) as store:
        return await store.upgrade_schema()
