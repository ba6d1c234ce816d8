"""Every error platepipe raises on purpose, and the exit code each one ends a run with.

    PipelineError                 root; carries the exit code the CLI ends with
    ├── ConfigError               bad settings or credentials missing (exit 1)
    │   └── BadUrlError           a --db URL that cannot name a database (exit 2, usage)
    ├── DatabaseError             the database is unreachable or refused a statement (exit 1)
    ├── JobBusyError              another live run holds the job (exit 1)
    └── JobNotFoundError          naming a job that does not exist (exit 2)

aiohttp and SQLAlchemy errors are translated into these at the boundary (client.py,
store/engine.py), so the CLI can print one line and exit with the documented code, never a
traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_FAILED_ITEMS = 4


class PipelineError(Exception):
    """Root of platepipe's errors; `exit_code` is what the CLI exits with."""

    exit_code = EXIT_FATAL


class ConfigError(PipelineError):
    """Settings that cannot work: missing credentials, an unparsable URL, bad values."""


class BadUrlError(ConfigError):
    """A database URL that cannot work whatever the server: a usage error, like a bad flag."""

    exit_code = EXIT_USAGE


class DatabaseError(PipelineError):
    """The database cannot be reached or refused what we asked of it.

    `transient` marks what a restart, a dropped connection or a busy lock explains: worth
    another try in a moment, where a missing table or a bad URL is not.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class JobBusyError(PipelineError):
    """Another run that is still alive is processing the same job."""


class JobNotFoundError(PipelineError):
    """A job was named for continuing, but no job of that name exists."""

    exit_code = EXIT_USAGE
