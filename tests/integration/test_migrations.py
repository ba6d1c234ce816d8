"""The schema comes only from migrations, and they yield exactly the application's metadata."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from pipeline import db
from pipeline.schema import metadata
from tests.support.db import query

ROOT = Path(__file__).resolve().parents[2]
PLATE_READS_COLUMNS = [
    "job", "path", "value", "conf", "x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4",
    "resolution", "file_type", "recognized_at", "camera", "captured_at",
]  # fmt: skip


def alembic(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    """Alembic's own command line, as an operator would run it by hand."""
    command = [sys.executable, "-m", "alembic", "-c", "migrations/alembic.ini", "-x", f"db={url}"]
    return subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def schema_differences(url: str) -> tuple[list, list[str]]:
    """(differences between the database and the metadata, plate_reads' columns)."""

    def inspect_sync(connection):
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        columns = [c["name"] for c in inspect(connection).get_columns("plate_reads")]
        return compare_metadata(context, metadata), columns

    async def run():
        engine = db.create_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(inspect_sync)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_alembic_upgrade_head_matches_the_metadata(db_url):
    upgraded = alembic("upgrade", "head", url=db_url)

    assert upgraded.returncode == 0, upgraded.stderr
    differences, view_columns = schema_differences(db_url)
    assert differences == []
    assert view_columns == PLATE_READS_COLUMNS


def test_downgrade_to_base_and_back(db_url):
    assert alembic("upgrade", "head", url=db_url).returncode == 0
    down = alembic("downgrade", "base", url=db_url)
    assert down.returncode == 0, down.stderr
    assert query(db_url, "SELECT count(*) FROM alembic_version") == [(0,)]

    assert alembic("upgrade", "head", url=db_url).returncode == 0
    assert schema_differences(db_url)[0] == []


def test_platepipe_db_upgrade_creates_the_schema(db_url, platepipe_env):
    from tests.support.cli import platepipe

    done = platepipe("db", "upgrade", "--db", db_url, env=platepipe_env)

    assert done.returncode == 0, done.stderr
    assert f"revision {db.HEAD_REVISION}" in done.stdout
    assert schema_differences(db_url)[0] == []


def test_an_older_database_is_brought_up_to_date_with_its_data(db_url, platepipe_env):
    from tests.support.cli import platepipe

    assert alembic("upgrade", "0001", url=db_url).returncode == 0
    insert_job = (
        "INSERT INTO jobs (name, created_at, updated_at) "
        "VALUES ('old', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
    )
    insert_item = (
        "INSERT INTO items (job_id, path, size, mtime, status, attempts, created_at, updated_at) "
        "SELECT id, '/a.jpg', 1, 0, 'done', 1, created_at, created_at FROM jobs"
    )
    for statement in (insert_job, insert_item):
        done = subprocess.run(
            [sys.executable, "-c", _EXECUTE, db_url, statement], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr

    # `status` only reads: it migrates nothing, and says what to do.
    refused = platepipe("status", "--job", "old", "--db", db_url, env=platepipe_env)
    assert refused.returncode == 1 and "platepipe db upgrade" in refused.stderr, refused.stderr
    assert query(db_url, "SELECT version_num FROM alembic_version") == [("0001",)]

    upgraded = platepipe("db", "upgrade", "--db", db_url, env=platepipe_env)
    status = platepipe("status", "--job", "old", "--db", db_url, env=platepipe_env)

    assert upgraded.returncode == 0 and "upgraded from revision 0001" in upgraded.stdout
    assert status.returncode == 0, status.stderr
    assert "done 1" in status.stdout
    assert query(db_url, "SELECT version_num FROM alembic_version") == [(db.HEAD_REVISION,)]
    assert schema_differences(db_url)[0] == []


_EXECUTE = """
import asyncio, sys
from sqlalchemy import text
from pipeline.db import create_engine

async def main():
    engine = create_engine(sys.argv[1])
    async with engine.begin() as connection:
        await connection.execute(text(sys.argv[2]))
    await engine.dispose()

asyncio.run(main())
"""


def test_the_head_revision_that_skips_alembic_is_the_newest_migration():
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(db.alembic_config()).get_current_head() == db.HEAD_REVISION


# (path as stored before 0006, raw_path) -> (path, raw_path) once 0006 has run.
PATHS_BEFORE_AND_AFTER_0006 = {
    ("/t/plain.jpg", None): ("/t/plain.jpg", None),
    ("/t/C:\\cams\\x1\\a.jpg", None): ("/t/C:\\cams\\x1\\a.jpg", None),  # Windows-looking
    ("/t/caf\\xe9.jpg", b"/t/caf\xe9.jpg"): ("/t/caf\\xe9.jpg", b"/t/caf\xe9.jpg"),
    # The text of an escape, literally: escaped now, so an odd byte's name cannot meet it.
    ("/t/c19\\xff.jpg", None): ("/t/c19\\\\xff.jpg", b"/t/c19\\xff.jpg"),
    # A backslash beside an odd byte: the backslash doubled.
    ("/t/a\\b\\xff.jpg", b"/t/a\\b\xff.jpg"): ("/t/a\\\\b\\xff.jpg", b"/t/a\\b\xff.jpg"),
}


def _items_paths(url: str) -> set[tuple[str, bytes | None]]:
    rows = query(url, "SELECT path, raw_path FROM items")
    return {(path, bytes(raw) if raw is not None else None) for path, raw in rows}


def test_0006_rewrites_stored_paths_one_to_one_and_back(db_url):
    from sqlalchemy import insert

    from pipeline.schema import items, jobs

    before = _migration_0006().down_revision
    assert alembic("upgrade", before, url=db_url).returncode == 0

    async def fill() -> None:
        engine = db.create_engine(db_url)
        try:
            async with engine.begin() as connection:
                when = datetime(2026, 1, 1)
                await connection.execute(
                    insert(jobs).values(id=1, name="old", created_at=when, updated_at=when)
                )
                await connection.execute(
                    insert(items),
                    [
                        {"job_id": 1, "path": path, "raw_path": raw, "size": 1, "mtime": 0.0,
                         "created_at": when, "updated_at": when}
                        for path, raw in PATHS_BEFORE_AND_AFTER_0006
                    ],
                )  # fmt: skip
        finally:
            await engine.dispose()

    asyncio.run(fill())

    upgraded = alembic("upgrade", "head", url=db_url)

    assert upgraded.returncode == 0, upgraded.stderr
    assert _items_paths(db_url) == set(PATHS_BEFORE_AND_AFTER_0006.values())

    down = alembic("downgrade", before, url=db_url)

    assert down.returncode == 0, down.stderr
    assert _items_paths(db_url) == set(PATHS_BEFORE_AND_AFTER_0006)


def _migration_0006():
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("m0006", ROOT / "migrations/versions/0006_unambiguous_paths.py")
    migration = module_from_spec(spec)
    spec.loader.exec_module(migration)
    return migration


def test_0006_paths_are_the_scanner_s():
    from pipeline.scanner import _shown

    migration = _migration_0006()
    for (_path, _raw), (after, raw) in PATHS_BEFORE_AND_AFTER_0006.items():
        name = raw if raw is not None else after.encode()
        assert migration.shown_0006(name) == after == _shown(os.fsdecode(name))
