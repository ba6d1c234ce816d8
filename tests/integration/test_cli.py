"""The command line as users meet it: errors are one line with SPEC's exit code, never a
traceback, and the secret never shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import platepipe, start_platepipe
from tests.support.corpus import make_corpus
from tests.support.db import query


@pytest.fixture
def small_corpus(tmp_path: Path):
    return make_corpus(tmp_path / "archive", 12, large_every=0)


def assert_one_line_error(result, code: int) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr


def test_missing_credentials_exit_1(small_corpus, sqlite_url, platepipe_env):
    env = {k: v for k, v in platepipe_env.items() if k != "NHN_OCR_SECRET_KEY"}

    result = platepipe("run", "--job", "j", str(small_corpus.root), "--db", sqlite_url, env=env)

    assert_one_line_error(result, 1)
    assert "NHN_OCR_SECRET_KEY" in result.stderr


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("mysql://root@localhost/x", 2),  # a bad URL is a usage error (test_cli_surface.py)
        ("not a url", 2),
        ("postgresql://postgres@127.0.0.1:1/none", 1),
    ],
)
def test_bad_or_unreachable_database(url, code, small_corpus, platepipe_env):
    result = platepipe("run", "--job", "j", str(small_corpus.root), "--db", url, env=platepipe_env)

    assert_one_line_error(result, code)


def test_usage_errors_exit_2(tmp_path, sqlite_url, platepipe_env):
    missing_root = platepipe("run", "--job", "j", str(tmp_path / "nope"), env=platepipe_env)
    assert missing_root.returncode == 2
    assert "Traceback" not in missing_root.stderr

    unknown_job = platepipe("run", "--job", "never-made", "--db", sqlite_url, env=platepipe_env)
    assert_one_line_error(unknown_job, 2)
    assert "never-made" in unknown_job.stderr

    bad_rate = platepipe("run", "--job", "j", str(tmp_path), "--rate", "0", env=platepipe_env)
    assert bad_rate.returncode == 2


def test_wrong_secret_stops_at_once_with_nothing_failed(
    small_corpus, db_url, start_emulator, platepipe_env, secret_key
):
    emulator = start_emulator()
    wrong = "wrong-secret-0123456789"
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "NHN_OCR_SECRET_KEY": wrong}

    result = platepipe(
        "run", "--job", "j", str(small_corpus.root), "--db", db_url, "--concurrency", "4", env=env
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "4010001" in result.stderr
    assert emulator.stats()["calls"] <= 4
    statuses = dict(query(db_url, "SELECT status, count(*) FROM items GROUP BY status"))
    # Images stay pending for the next run; only files caught locally may be skipped.
    assert set(statuses) <= {"pending", "skipped"}
    assert statuses["pending"] >= len(small_corpus.images)
    assert wrong not in result.stdout + result.stderr
    dump = repr(query(db_url, "SELECT * FROM items")) + repr(query(db_url, "SELECT * FROM jobs"))
    assert wrong not in dump and secret_key not in dump


def test_status_jobs_and_json(small_corpus, db_url, start_emulator, platepipe_env):
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
    ran = platepipe("run", "--job", "cams", str(small_corpus.root), "--rate", "200", env=env)
    assert ran.returncode == 0, ran.stderr

    status = platepipe("status", "--job", "cams", env=env)
    listed = platepipe("jobs", env=env)
    as_json = platepipe("status", "--job", "cams", "--json", env=env)

    assert status.returncode == 0, status.stderr
    assert f"done {len(small_corpus.images)}" in status.stdout
    assert "cams" in listed.stdout and f"{len(small_corpus.scannable)} items" in listed.stdout
    import json

    (doc,) = json.loads(as_json.stdout)
    assert doc["counts"]["done"] == len(small_corpus.images)
    assert doc["counts"]["skipped"] == len(small_corpus.bad)
    assert doc["error_codes"] == {
        code: list(small_corpus.bad.values()).count(code) for code in small_corpus.bad.values()
    }
    missing = platepipe("status", "--job", "nope", env=env)
    assert_one_line_error(missing, 2)


def test_a_second_run_of_a_live_job_exits_at_once(
    small_corpus, sqlite_url, start_emulator, platepipe_env
):
    emulator = start_emulator("--latency", "0.5")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}
    first = start_platepipe(
        "run", "--job", "busy", str(small_corpus.root), "--rate", "2", "--concurrency", "1", env=env
    )
    try:
        import time

        deadline = time.monotonic() + 30
        while emulator.stats()["calls"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)

        second = platepipe("run", "--job", "busy", env=env, timeout=60)

        assert_one_line_error(second, 1)
        assert "busy" in second.stderr and "pid" in second.stderr
    finally:
        first.kill()
        first.communicate()


def test_help_never_shows_the_secret(platepipe_env, secret_key):
    for command in ([], ["run"], ["emulator"], ["status"], ["demo"]):
        shown = platepipe(*command, "--help", env=platepipe_env)
        assert shown.returncode == 0
        assert secret_key not in shown.stdout
