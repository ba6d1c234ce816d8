"""The `platepipe` command line: thin wrappers that parse options, run, and print.

Settings resolve as flags > environment > config file > defaults: the file (`--config`)
becomes click's `default_map`, which environment variables and flags override. Every setting's
option comes from the one table in pipeline/settings.py.

    app.py      the group, the config file, errors as one line and an exit code
    stores.py   where the database is opened and closed
    run.py      run, work, scan
    reports.py  status, jobs, items, retry, export, usage
    admin.py    config, check, db upgrade, demo (and emulator, registered lazily)
"""

from __future__ import annotations

from pipeline.cli import admin, reports, run  # noqa: F401 - each registers its commands
from pipeline.cli.app import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli(prog_name="platepipe")
