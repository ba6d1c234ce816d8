"""`config`, `check`, `db upgrade` and `demo`: the commands around the runs. (`emulator` is
registered lazily by the group, in app.py.)"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from click.core import ParameterSource
from sqlalchemy.engine import make_url

from pipeline import logs
from pipeline.cli.app import cli, fail, from_config, run_async
from pipeline.cli.stores import upgrade_schema
from pipeline.config import api_settings, secret_source
from pipeline.db import absolute_url, display_url
from pipeline.errors import PipelineError
from pipeline.settings import SECRET_KEY_ENV, SETTINGS, default, options_for


@cli.command("config")
@options_for("config")
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
    for setting in SETTINGS.values():
        if "config" in setting.commands and setting.option and setting.key != "quiet":
            click.echo(_setting_line(ctx, setting.key, values[setting.name]))
    group = ctx.find_root()
    log_json = group.params.get("log_json", False)
    click.echo(f"log_json = {_toml(log_json)}  # {_source(group, 'log_json')}")
    click.echo(_secret_line(from_config("secret_key_file")))


def _setting_line(ctx: click.Context, key: str, value: Any) -> str:
    """One setting of `config`: as TOML with its source, or a comment for a flag only."""
    setting = SETTINGS[key]
    source = _source(ctx, setting.name)
    if not setting.toml:  # a flag of `run` alone, which a config file does not hold
        shown = "not set" if value is None else f"{value} from the {source}"
        return f"# {key}: {shown} (a flag only)"
    if key == "db":
        try:
            shown_url = display_url(absolute_url(value))
        except PipelineError as exc:
            fail(exc)
        if make_url(shown_url).password != make_url(value).password:
            source += "; password hidden"
        value = shown_url
    if value is None and setting.kind is object:
        value = setting.default  # concurrency's None is written "auto"
    return f"{key} = {_toml(value)}  # {source}"


def _secret_line(secret_file: str | None) -> str:
    """Where the secret key comes from, never the key."""
    where = secret_source(secret_file)
    if where == "environment":
        return f"# secret key: *** from the environment ({SECRET_KEY_ENV})"
    if where == "file":
        return f"secret_key_file = {_toml(secret_file)}  # config file"
    if where == "missing file":
        return "# secret_key_file: set in the config file, but names no file (not shown)"
    return f"# secret key: not set (set {SECRET_KEY_ENV} or secret_key_file)"


_SOURCES = {
    ParameterSource.COMMANDLINE: "flag",
    ParameterSource.ENVIRONMENT: "environment",
    ParameterSource.DEFAULT_MAP: "config file",
    ParameterSource.DEFAULT: "default",
}


def _source(ctx: click.Context, name: str) -> str:
    source = ctx.get_parameter_source(name)
    return _SOURCES.get(source, "default") if source is not None else "default"


def _toml(value: Any) -> str:
    """A setting's value as TOML: JSON's strings, numbers, booleans and arrays are TOML's."""
    if value is None:
        value = ""  # an unset text setting (capture_pattern)
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, ensure_ascii=False)


@cli.command()
@options_for("check")
def check(db_url: str, **values: Any) -> None:
    """Verify the database, the endpoint and the keys before a night; exit 0 if all are
    good, else 1. Writes nothing anywhere.

    Costs one request: an empty image, which the API answers with 4000004 (file empty) once
    it has accepted the keys, recognizing nothing. NHN may count it as one call.

    \b
    Example:
      platepipe check --db postgresql://plates@db.internal:5432/plates
    """
    from pipeline.check import run_check

    # A connection that cannot open within the test's whole timeout is as good as refused.
    values["connect_timeout"] = min(values["timeout"], default("connect_timeout"))
    try:
        api = api_settings(values, from_config("secret_key_file"))
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
@options_for("db upgrade")
def db_upgrade(db_url: str) -> None:
    """Apply the schema migrations (Alembic, migrations/) up to the newest.

    `platepipe run` does this by itself; this is for preparing a database in advance. It
    says whether it changed anything.

    \b
    Example:
      platepipe db upgrade --db postgresql://plates@db.internal:5432/plates
    """

    before, after = run_async(upgrade_schema(db_url))
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
