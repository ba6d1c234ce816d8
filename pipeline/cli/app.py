"""The `platepipe` group and what every command shares: the config file, the run at the
edge, and expected errors as one line and SPEC's exit code."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Coroutine
from typing import Any, ClassVar, NoReturn, TypeVar

import click

from pipeline import logs
from pipeline.config import default_map, read_config_file
from pipeline.errors import EXIT_STOPPED, ConfigError, PipelineError
from pipeline.settings import CONFIG_ENV, options_for

T = TypeVar("T")

# What a program killed by SIGPIPE ends with in a shell: the reader of our output went away.
EXIT_OUTPUT_CLOSED = 128 + 13

job_option = click.option("--job", required=True, help="The job's name.")


def run_async(main: Coroutine[Any, Any, T]) -> T:
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


def from_config(key: str) -> Any:
    """A config-file value that has no option of its own (secret_key_file)."""
    return (click.get_current_context().default_map or {}).get(key)


def load_config(ctx: click.Context, _param: Any, path: str | None) -> None:
    if path:
        try:
            ctx.default_map = default_map(read_config_file(path))
        except ConfigError as exc:
            fail(exc)


class LazyGroup(click.Group):
    """A group whose heavier subcommands are imported when they are used, not at every start:
    the emulator (aiohttp's server side) stays out of `status`, `jobs` and the rest."""

    lazy: ClassVar[dict[str, str]] = {"emulator": "pipeline.emulator:emulator_command"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attribute = self.lazy[name].split(":")
            command: click.Command = getattr(importlib.import_module(module), attribute)
            return command
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
@options_for("")
def cli(verbose: bool, log_json: bool) -> None:
    """Recognize license plates in archived camera images through NHN Cloud's Vehicle Plate
    OCR API, and keep the results in SQLite or PostgreSQL.

    \b
    Example:
      export NHN_OCR_APP_KEY=... NHN_OCR_SECRET_KEY=...
      platepipe run --job nightly-2026-11-24 /archive/2026-11-24
    """
    logs.setup(verbose=verbose, as_json=log_json)
