"""Database URLs, engines and migrations: plain URLs in, the right async driver out."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from pipeline.errors import BadUrlError

if TYPE_CHECKING:
    from alembic.config import Config

# The newest migration in migrations/versions (a test holds the two together). A database
# already there is opened without loading Alembic at all: a third of every command's start-up.
HEAD_REVISION = "0009"

MIGRATION_LOCK = 0x504C5030  # PostgreSQL advisory lock key: one process migrates at a time

SQLITE_BUSY_TIMEOUT_MS = 30_000
# One writing connection per process on SQLite; callers queue for it instead of meeting
# "database is locked". Waiting for it is bounded only by the slowest single statement.
SQLITE_POOL_TIMEOUT_S = 600
POSTGRES_POOL_SIZE = 5
IDLE_IN_TRANSACTION_MS = 20_000  # our transactions never wait on anything but the database
WRITE_OPTION = "platepipe_writes"  # execution option: this transaction will write

_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def parse_url(url: str) -> URL:
    """`url` with platepipe's async driver for its database; BadUrlError if it cannot work."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        # Not echoed: a mistyped URL may still hold a password.
        raise BadUrlError(
            "not a database URL (try sqlite:///nightly.db or postgresql://user@host/plates)"
        ) from exc
    backend = parsed.get_backend_name().lower()
    backend = "postgresql" if backend == "postgres" else backend
    if backend not in _DRIVERS:
        raise BadUrlError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")
    if backend == "sqlite":
        _check_sqlite(parsed)
    parsed = parsed.set(drivername=_DRIVERS[backend])
    if "sslmode" in parsed.query:  # libpq's spelling; asyncpg takes the same modes as `ssl`
        parsed = parsed.update_query_dict({"ssl": parsed.query["sslmode"]}).difference_update_query(
            ["sslmode"]
        )
    return parsed


def _check_sqlite(parsed: URL) -> None:
    if parsed.host:  # sqlite://plates.db: the name went where a host would be
        raise BadUrlError(
            f"sqlite URLs take three slashes: sqlite:///{parsed.host} (or sqlite:////abs/path.db)"
        )
    if not parsed.database:
        raise BadUrlError("the sqlite URL names no file: try sqlite:///nightly.db")
    if parsed.database == ":memory:" or parsed.query.get("mode") == "memory":
        raise BadUrlError("an in-memory database keeps nothing: name a file, sqlite:///nightly.db")


def absolute_url(url: str) -> str:
    """`url` checked (BadUrlError), with a relative SQLite file made absolute: the file that
    this working directory means."""
    path = sqlite_path(url)
    if path is None or os.path.isabs(path):
        return url
    return make_url(url).set(database=os.path.abspath(path)).render_as_string(hide_password=False)


def sqlite_path(url: str) -> str | None:
    """The file a sqlite URL names (as given, maybe relative), None for other databases."""
    parsed = parse_url(url)
    return parsed.database if parsed.get_backend_name() == "sqlite" else None


def async_url(url: str) -> str:
    return parse_url(url).render_as_string(hide_password=False)


def display_url(url: str) -> str:
    """The URL as it may be shown to people and logs: password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<invalid URL>"


def create_engine(url: str, *, read_only: bool = False) -> AsyncEngine:
    """An engine for `url`. `read_only` opens a SQLite file with mode=ro, so that a file (or a
    folder) the user may not write can still be read; on PostgreSQL every transaction is
    READ ONLY, so a command that only reads cannot write by mistake."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        pragmas = _sqlite_pragmas
        if read_only:
            parsed, pragmas = _read_only_sqlite(parsed)
        engine = create_async_engine(
            parsed, pool_size=1, max_overflow=0, pool_timeout=SQLITE_POOL_TIMEOUT_S
        )
        event.listen(engine.sync_engine, "connect", pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    # A process paused inside a transaction (SIGSTOP, a VM freeze) would hold its row locks
    # for good and stall every peer that takes its items over: the server ends such a session.
    settings = {"idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS)}
    if read_only:
        settings["default_transaction_read_only"] = "on"
    connect_args = {"server_settings": settings}
    return create_async_engine(
        parsed, pool_size=POSTGRES_POOL_SIZE, pool_pre_ping=True, connect_args=connect_args
    )


def _read_only_sqlite(parsed: URL) -> tuple[URL, Callable[..., None]]:
    """How to open a SQLite file without writing it: the URL and the connect-time pragmas.

    A file we may write is opened as usual with `query_only`: every change is refused, and the
    last connection to close still removes the -wal and -shm files, as a writer's would. One we
    may not write (mode 444, or a read-only folder) is opened as a `file:` URI with mode=ro; a
    WAL database read that way needs its -shm file, and in a folder nobody may write, where
    that cannot be made and no -shm shows a writer, the file is opened `immutable` instead
    (nothing can be changing it)."""
    path = os.path.abspath(parsed.database or "")
    folder = os.path.dirname(path)
    if os.access(path, os.W_OK) and os.access(folder, os.W_OK):
        return parsed, _sqlite_query_only_pragmas
    query = {"mode": "ro", "uri": "true"}
    if not os.access(folder, os.W_OK) and not os.path.exists(f"{path}-shm"):
        query["immutable"] = "1"
    return parsed.set(database=f"file:{quote(path)}", query=query), _sqlite_read_pragmas


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # The driver's own transaction handling skips BEGIN before DDL, so a migration killed
    # midway would leave half a schema; `_sqlite_begin` issues every BEGIN itself instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets `status` read while a run writes; NORMAL sync in WAL mode survives a killed
    # process (only power loss can drop the last commits, never corrupt the file).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_read_pragmas(dbapi_connection, _record) -> None:
    # No journal_mode or synchronous: setting them writes. The file keeps the mode it has.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_query_only_pragmas(dbapi_connection, record) -> None:
    _sqlite_read_pragmas(dbapi_connection, record)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def _sqlite_begin(connection) -> None:
    # A transaction that will write takes the write lock up front (IMMEDIATE): one that read
    # first and upgraded later could fail at once with "database is locked" when another
    # process wrote in between, where waiting for the lock honours busy_timeout instead.
    writes = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


def migrations_dir() -> Path:
    """migrations/ of a source checkout, or the copy a wheel carries inside the package."""
    packaged = Path(__file__).resolve().parent / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "migrations"


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config(str(migrations_dir() / "alembic.ini"))
    config.set_main_option("script_location", str(migrations_dir()))
    return config


async def current_revision(connection: AsyncConnection) -> str | None:
    """The schema's Alembic revision, None for a database without one."""

    def _read(sync_connection) -> str | None:
        if not sync_connection.dialect.has_table(sync_connection, "alembic_version"):
            return None
        return sync_connection.execute(text("SELECT version_num FROM alembic_version")).scalar()

    return await connection.run_sync(_read)


async def upgrade(connection: AsyncConnection, revision: str = "head") -> None:
    """Apply migrations up to `revision` on an open connection (in its transaction)."""
    if revision == "head" and await current_revision(connection) == HEAD_REVISION:
        return
    if connection.dialect.name == "postgresql":
        # Several processes bringing a fresh database up at once would create the same
        # tables side by side and all but one fail: one migrates, the others wait for its
        # commit and find the schema there. (SQLite: the caller's BEGIN IMMEDIATE does it.)
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
        )
        if revision == "head" and await current_revision(connection) == HEAD_REVISION:
            return

    def _upgrade(sync_connection) -> None:
        from alembic import command

        config = alembic_config()
        config.attributes["connection"] = sync_connection
        command.upgrade(config, revision)

    await connection.run_sync(_upgrade)
