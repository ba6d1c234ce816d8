"""One stored time format on both databases, as README promises: `YYYY-MM-DD HH:MM:SS`, so
`captured_at = '2026-11-24 18:42:14'` finds the row in sqlite3 as in psql; and a database
written by an older version is brought to it by migration 0007."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.integration.test_migrations import _EXECUTE, alembic, schema_differences
from tests.support.cli import platepipe
from tests.support.corpus import make_image
from tests.support.db import query

PATTERN = r"/(?P<camera>cam\d+)/(?P<date>\d{8})_(?P<time>\d{6})"
TEXT = "CAST({} AS TEXT)"


def test_times_are_stored_to_the_second_on_both_databases(
    tmp_path, db_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    by_path = root / "cam01" / "20261124_184214.jpg"
    by_mtime = root / "other" / "plain.jpg"
    make_image(by_path, 64, 48, "JPEG", seed=1)
    make_image(by_mtime, 64, 48, "JPEG", seed=2)
    os.utime(by_mtime, (1_700_000_000.75, 1_700_000_000.75))  # a fraction of a second
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}

    ran = platepipe("run", "--job", "J", str(root), "--capture-pattern", PATTERN, env=env)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    found = query(db_url, "SELECT path FROM items WHERE captured_at = '2026-11-24 18:42:14'")
    assert found == [(str(by_path),)]
    stamps = [
        *query(db_url, f"SELECT {TEXT.format('captured_at')} FROM items"),
        *query(db_url, f"SELECT {TEXT.format('recognized_at')} FROM recognitions"),
        *query(db_url, f"SELECT {TEXT.format('started_at')} FROM attempts"),
    ]
    assert len(stamps) == 2 + 2 + 2
    for (stamp,) in stamps:
        assert len(stamp) == 19 and stamp[10] == " ", stamp


def test_migration_0007_cuts_the_fractions_of_older_rows(db_url):
    assert alembic("upgrade", "0004", url=db_url).returncode == 0
    statements = (
        "INSERT INTO jobs (name, created_at, updated_at) "
        "VALUES ('old', '2026-11-24 18:00:00.250000', '2026-11-24 19:00:00.500000')",
        "INSERT INTO items (job_id, path, size, mtime, status, attempts, captured_at, "
        "created_at, updated_at) SELECT id, '/a.jpg', 1, 0, 'done', 1, "
        "'2026-11-24 18:42:14.000000', created_at, created_at FROM jobs",
        "INSERT INTO recognitions (item_id, latency_ms, raw_response, recognized_at) "
        "SELECT id, 5, '{}', '2026-11-24 19:00:01.123456' FROM items",
        "INSERT INTO attempts (item_id, attempt, started_at, duration_ms, outcome, code) "
        "SELECT id, 1, '2026-11-24 19:00:00.999999', 5, 'done', '0' FROM items",
    )
    for statement in statements:
        done = subprocess.run(
            [sys.executable, "-c", _EXECUTE, db_url, statement], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr

    upgraded = alembic("upgrade", "head", url=db_url)

    assert upgraded.returncode == 0, upgraded.stderr
    assert query(db_url, "SELECT path FROM items WHERE captured_at = '2026-11-24 18:42:14'") == [
        ("/a.jpg",)
    ]
    texts = query(
        db_url,
        "SELECT CAST(r.recognized_at AS TEXT), CAST(a.started_at AS TEXT) "
        "FROM jobs j JOIN items i ON i.job_id = j.id JOIN recognitions r ON r.item_id = i.id "
        "JOIN attempts a ON a.item_id = i.id",
    )
    assert texts == [("2026-11-24 19:00:01", "2026-11-24 19:00:00")]
    assert schema_differences(db_url)[0] == []
