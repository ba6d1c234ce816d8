"""The command line's edges (issue 10): every mistake is one line with SPEC's exit code, commands
that only read create nothing, only README's environment variables set anything, and secrets
and odd settings never cost a traceback or an echo."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline import db
from pipeline.store import Store
from tests.support.cli import platepipe
from tests.support.corpus import make_corpus
from tests.support.db import query

JOB = "nightly-2026-11-24"
STAMP = "2026-11-24 01:00:00"


def assert_one_line_error(result, code: int) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr


def make_schema(url: str, revision: str = "head") -> None:
    async def run() -> None:
        engine = db.create_engine(url)
        try:
            async with engine.begin() as connection:
                await db.upgrade(connection, revision)
        finally:
            await engine.dispose()

    asyncio.run(run())


def seed(path: Path, *, done: int = 0, failed: int = 0, job: str = JOB) -> str:
    """A SQLite database with one job of `done` items (one plate read each) and `failed`
    items (code 4000002), written with plain SQL; its URL."""
    url = f"sqlite:///{path}"
    make_schema(url)
    with sqlite3.connect(path) as con:
        con.execute(
            "INSERT INTO jobs (name, calls, created_at, updated_at) VALUES (?, ?, ?, ?)",
            (job, done + failed, STAMP, STAMP),
        )
        (job_id,) = con.execute("SELECT id FROM jobs WHERE name = ?", (job,)).fetchone()
        rows = [(job_id, f"/archive/cam1/{n:06d}.jpg", "done", None) for n in range(done)]
        rows += [(job_id, f"/archive/cam2/{n:06d}.jpg", "failed", "4000002") for n in range(failed)]
        con.executemany(
            "INSERT INTO items (job_id, path, size, mtime, status, attempts, error_code, "
            f"created_at, updated_at) VALUES (?, ?, 1000, 0, ?, 1, ?, '{STAMP}', '{STAMP}')",
            rows,
        )
        con.execute(
            "INSERT INTO recognitions (item_id, file_type, resolution, latency_ms, raw_response,"
            f" recognized_at) SELECT id, 'jpg', 'low', 50, '{{}}', '{STAMP}' FROM items "
            "WHERE status = 'done'"
        )
        con.execute(
            "INSERT INTO plates (item_id, idx, value, conf, x1, y1, x2, y2, x3, y3, x4, y4) "
            "SELECT id, 0, '12가3456', 0.9, 1, 2, 3, 2, 3, 4, 1, 4 FROM items WHERE status = 'done'"
        )
    return url


@pytest.fixture
def env(platepipe_env, tmp_path) -> dict[str, str]:
    return platepipe_env


# -- tracebacks where SPEC promises one line ---------------------------------------------------

BAD_URLS = [
    "sqlite://plates.db",
    "sqlite://",
    "sqlite:///:memory:",
    "postgresql://u@host:notaport/x",
    "mysql://root@localhost/x",
    "not a url",
]
COMMANDS = [
    ["status"],
    ["export", "--job", JOB, "--format", "csv"],
    ["retry", "--job", JOB],
    ["db", "upgrade"],
    ["run", "--job", JOB, "."],
    ["scan", "--job", JOB, "."],
    ["config"],
]
# Every bad URL on `jobs`, and each of two on every other command that takes --db.
CASES = [(["jobs"], url) for url in BAD_URLS] + [
    (command, url) for command in COMMANDS for url in ("sqlite://plates.db", BAD_URLS[3])
]


@pytest.mark.parametrize(("command", "url"), CASES, ids=lambda v: v if isinstance(v, str) else v[0])
def test_a_bad_database_url_is_one_line_and_a_usage_error(command, url, env, tmp_path):
    result = platepipe(*command, "--db", url, env=env, cwd=tmp_path)

    assert_one_line_error(result, 2)
    assert list(tmp_path.iterdir()) == []  # nothing created, not even ./plates.db


def test_a_password_in_a_bad_url_is_not_shown(env, tmp_path):
    result = platepipe("jobs", "--db", "mysql://u:topsecret@h/x", env=env, cwd=tmp_path)

    assert_one_line_error(result, 2)
    assert "topsecret" not in result.stderr


def test_an_unreachable_database_is_exit_1(env, tmp_path):
    result = platepipe("jobs", "--db", "postgresql://postgres@127.0.0.1:1/none", env=env)

    assert_one_line_error(result, 1)


def test_export_to_a_folder_that_does_not_exist_is_one_line_exit_1(env, tmp_path):
    url = seed(tmp_path / "plates.db", done=3)

    result = platepipe(
        "export", "--job", JOB, "--format", "csv", "-o", "/nonexistent/dir/x.csv", "--db", url,
        env=env,
    )  # fmt: skip

    assert_one_line_error(result, 1)
    assert "/nonexistent/dir/x.csv" in result.stderr


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_into_a_pipe_closed_early_ends_quietly(fmt, env, tmp_path):
    url = seed(tmp_path / "plates.db", done=5000)  # far more than a pipe's buffer holds
    with subprocess.Popen(
        [sys.executable, "-m", "pipeline", "export", "--job", JOB, "--format", fmt, "--db", url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        first = process.stdout.readline()  # `| head -1`
        process.stdout.close()
        stderr = process.stderr.read().decode()
        code = process.wait(timeout=60)

    assert first
    assert stderr == ""
    assert code == 141  # as a program killed by SIGPIPE: the shell's `| head` convention


# -- commands that only read, writing ----------------------------------------------------------

READ_ONLY = [
    ["status"],
    ["status", "--job", JOB],
    ["jobs"],
    ["export", "--job", JOB, "--format", "jsonl"],
    ["usage", "--json"],
    ["retry", "--job", JOB],  # writes, but creates nothing
    ["config"],
]


@pytest.mark.parametrize("command", READ_ONLY, ids=" ".join)
def test_reading_commands_never_create_a_sqlite_file(command, env, tmp_path):
    typo = tmp_path / "plate.db"

    named = platepipe(*command, "--db", f"sqlite:///{typo}", env=env, cwd=tmp_path)
    default = platepipe(*command, env=env, cwd=tmp_path)  # ./platepipe.db

    assert list(tmp_path.iterdir()) == []
    if command != ["config"]:
        assert_one_line_error(named, 1)
        assert_one_line_error(default, 1)
        assert "no database" in named.stderr


@pytest.mark.parametrize("command", READ_ONLY[:-1], ids=" ".join)
def test_reading_commands_never_create_tables_in_postgres(command, env, postgres_url):
    result = platepipe(*command, "--db", postgres_url, env=env)

    assert_one_line_error(result, 1)
    assert "no platepipe tables" in result.stderr
    tables = query(
        postgres_url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    )
    assert tables == []


def test_reading_an_existing_database_leaves_no_file_behind(env, tmp_path):
    url = seed(tmp_path / "plates.db", done=2)
    before = sorted(p.name for p in tmp_path.iterdir())

    for command in (["status"], ["jobs"], ["export", "--job", JOB, "--format", "csv"], ["usage"]):
        result = platepipe(*command, "--db", url, env=env)
        assert result.returncode == 0, result.stderr

    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no -wal, no -shm left


def test_an_old_schema_is_not_upgraded_by_a_reading_command(env, tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    make_schema(url, "0003")

    result = platepipe("status", "--db", url, env=env)

    assert_one_line_error(result, 1)
    assert "platepipe db upgrade" in result.stderr
    assert query(url, "SELECT version_num FROM alembic_version") == [("0003",)]


def _as_other_user(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """Run platepipe as `nobody` when we are root (root writes anything, whatever the mode)."""
    command = [sys.executable, "-m", "pipeline", *args]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot test as another user")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_a_read_only_database_file_and_folder_can_be_read(env):
    folder = Path(tempfile.mkdtemp(prefix="platepipe-ro-"))  # reachable by `nobody`
    try:
        folder.chmod(0o755)
        path = folder / "plates.db"
        url = seed(path, done=2, failed=1)
        path.chmod(0o444)
        folder.chmod(0o555)
        before = sorted(p.name for p in folder.iterdir())

        for command in (["status", "--job", JOB], ["jobs"], ["export", "--job", JOB,
                        "--format", "csv"]):  # fmt: skip
            result = _as_other_user([*command, "--db", url], env, folder)
            assert result.returncode == 0, (command, result.stderr)
            assert "Traceback" not in result.stderr
        assert "done 2" in _as_other_user(["status", "--db", url], env, folder).stdout

        assert sorted(p.name for p in folder.iterdir()) == before
    finally:
        folder.chmod(0o755)
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()


# -- surprises ---------------------------------------------------------------------------------


def test_an_undocumented_variable_sets_nothing(env, tmp_path):
    url = seed(tmp_path / "plates.db", done=4, failed=1)

    result = platepipe(
        "retry", "--job", JOB, "--db", url, env={**env, "PLATEPIPE_RETRY_INCLUDE_DONE": "1"}
    )

    assert result.returncode == 0, result.stderr
    assert "1 item of" in result.stdout
    assert query(url, "SELECT COUNT(*) FROM items WHERE status = 'done'") == [(4,)]


def test_retry_refuses_while_a_run_is_live_on_the_job(env, tmp_path):
    url = seed(tmp_path / "plates.db", done=3, failed=2)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with sqlite3.connect(tmp_path / "plates.db") as con:
            now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")  # a fresh heartbeat
            con.execute(
                "INSERT INTO workers (id, job_id, host, pid, kind, started_at, heartbeat_at) "
                "VALUES ('w1', 1, ?, ?, 'run', ?, ?)",
                (socket.gethostname(), live.pid, now, now),
            )

        refused = platepipe("retry", "--job", JOB, "--done", "--db", url, env=env)

        assert_one_line_error(refused, 1)
        assert str(live.pid) in refused.stderr
        assert query(url, "SELECT status, COUNT(*) FROM items GROUP BY status ORDER BY 1") == [
            ("done", 3),
            ("failed", 2),
        ]
    finally:
        live.kill()
        live.wait()

    after = platepipe("retry", "--job", JOB, "--db", url, env=env)  # the run is gone now

    assert after.returncode == 0, after.stderr
    assert "2 items of" in after.stdout


# -- secrets and odd settings ------------------------------------------------------------------


@pytest.mark.parametrize("via", ["flag", "env"])
def test_config_hides_the_database_password(via, env):
    url = "postgresql://plates:topsecret@db.internal:5432/plates"
    args = ["config", "--db", url] if via == "flag" else ["config"]
    result = platepipe(*args, env={**env, "PLATEPIPE_DB": url} if via == "env" else env)

    assert result.returncode == 0, result.stderr
    assert "topsecret" not in result.stdout + result.stderr
    assert "db.internal" in result.stdout


def test_config_output_loads_back_as_a_config_file(env, tmp_path):
    first = platepipe("config", "--rate", "25", "--exclude", "thumbs", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    generated = tmp_path / "gen.toml"
    generated.write_text(first.stdout, encoding="utf-8")

    again = platepipe("--config", str(generated), "config", env=env, cwd=tmp_path)

    assert again.returncode == 0, again.stderr

    def settings(text: str) -> list[str]:
        return [line.split("  #")[0] for line in text.splitlines() if not line.startswith("#")]

    assert settings(again.stdout) == settings(first.stdout)
    assert "rate = 25.0  # config file" in again.stdout


def run_args(corpus, url: str) -> list[str]:
    return ["run", "--job", JOB, str(corpus.root), "--db", url, "--rate", "200"]


@pytest.fixture
def corpus(tmp_path):
    return make_corpus(tmp_path / "archive", 6, large_every=0)


def test_a_key_file_saved_on_windows_works_and_relative_paths_are_beside_the_config(
    corpus, tmp_path, start_emulator, platepipe_env, secret_key
):
    emulator = start_emulator()
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "nhn.key").write_bytes(f"  {secret_key}\r\n".encode())
    config = folder / "platepipe.toml"
    config.write_text('secret_key_file = "nhn.key"\ndb = "sqlite:///plates.db"\n', encoding="utf-8")
    env = {k: v for k, v in platepipe_env.items() if k != "NHN_OCR_SECRET_KEY"}
    env["NHN_OCR_ENDPOINT"] = emulator.url
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()

    result = platepipe(
        "--config", str(config), "run", "--job", JOB, str(corpus.root), "--rate", "200",
        env=env, cwd=elsewhere,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert (folder / "plates.db").exists() and not (elsewhere / "plates.db").exists()
    assert secret_key not in result.stdout + result.stderr


@pytest.mark.parametrize("source", ["file", "env"], ids=["secret_key_file", "NHN_OCR_SECRET_KEY"])
def test_a_control_character_inside_the_key_is_a_config_error_not_shown(
    source, corpus, tmp_path, platepipe_env
):
    key = "sk-realsecret\x07value"
    env = {k: v for k, v in platepipe_env.items() if k != "NHN_OCR_SECRET_KEY"}
    args = []
    if source == "file":
        (tmp_path / "nhn.key").write_text(key, encoding="utf-8")
        (tmp_path / "c.toml").write_text(f'secret_key_file = "{tmp_path / "nhn.key"}"\n')
        args = ["--config", str(tmp_path / "c.toml")]
    else:
        env["NHN_OCR_SECRET_KEY"] = key

    result = platepipe(*args, *run_args(corpus, f"sqlite:///{tmp_path / 'p.db'}"), env=env)

    assert_one_line_error(result, 1)
    assert "control character" in result.stderr
    assert "realsecret" not in result.stderr


def test_a_key_where_its_file_path_belongs_is_not_echoed(corpus, tmp_path, platepipe_env):
    (tmp_path / "c.toml").write_text('secret_key_file = "sk-Pasted0123456789Key"\n')
    env = {k: v for k, v in platepipe_env.items() if k != "NHN_OCR_SECRET_KEY"}
    args = ["--config", str(tmp_path / "c.toml")]

    result = platepipe(*args, *run_args(corpus, f"sqlite:///{tmp_path / 'p.db'}"), env=env)
    shown = platepipe(*args, "config", env=env)

    assert_one_line_error(result, 1)
    assert "Pasted0123456789Key" not in result.stderr
    assert shown.returncode == 0 and "Pasted0123456789Key" not in shown.stdout


def _unlistable_folder(root: Path) -> None:
    """A folder under `root` that cannot be listed, even by root: its path is past PATH_MAX."""
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(24):  # 24 * 201 characters > 4096
            name = "d" * 200
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


def test_a_folder_that_cannot_be_listed_makes_run_and_scan_exit_4(
    corpus, tmp_path, start_emulator, platepipe_env
):
    _unlistable_folder(corpus.root)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url}
    url = f"sqlite:///{tmp_path / 'p.db'}"

    ran = platepipe(*run_args(corpus, url), env=env)
    scanned = platepipe("scan", "--job", "other", str(corpus.root), "--db", url, env=env)

    assert ran.returncode == 4, ran.stdout + ran.stderr
    assert "could not be listed" in ran.stdout
    assert scanned.returncode == 4, scanned.stdout + scanned.stderr
    assert "Traceback" not in ran.stderr + scanned.stderr


# -- smaller -----------------------------------------------------------------------------------


def test_one_item_is_one_item(env, tmp_path):
    url = seed(tmp_path / "plates.db", done=1)

    listed = platepipe("jobs", "--db", url, env=env)
    status = platepipe("status", "--db", url, env=env)

    assert "1 item (" in listed.stdout, listed.stdout
    assert f"job {JOB}: 1 item\n" in status.stdout, status.stdout


def test_retry_of_a_code_no_item_has_names_the_codes_there_are(env, tmp_path):
    url = seed(tmp_path / "plates.db", done=1, failed=2)

    result = platepipe("retry", "--job", JOB, "--code", "nosuch", "--db", url, env=env)

    assert result.returncode == 0
    assert "0 items" in result.stdout
    assert "4000002 (2)" in result.stderr


def test_db_upgrade_says_whether_it_changed_anything(env, tmp_path):
    old = f"sqlite:///{tmp_path / 'old.db'}"
    make_schema(old, "0003")
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"

    upgraded = platepipe("db", "upgrade", "--db", old, env=env)
    created = platepipe("db", "upgrade", "--db", fresh, env=env)
    again = platepipe("db", "upgrade", "--db", fresh, env=env)

    assert f"upgraded from revision 0003 to {db.HEAD_REVISION}" in upgraded.stdout
    assert "created" in created.stdout
    assert "nothing to do" in again.stdout


def test_work_on_an_unknown_job_points_at_scan(env, tmp_path):
    url = seed(tmp_path / "plates.db")

    result = platepipe("work", "--job", "never-made", "--db", url, env=env)

    assert_one_line_error(result, 2)
    assert "platepipe scan --job never-made" in result.stderr
    assert "give ROOT" not in result.stderr


@pytest.mark.parametrize(
    "option", [["--max-duration", "0"], ["--rate", "nan"], ["--rate", "inf"], ["--timeout", "inf"]]
)
def test_impossible_numbers_are_usage_errors(option, env, tmp_path):
    result = platepipe("run", "--job", JOB, str(tmp_path), *option, env=env, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_emulator_help_shows_its_fixed_test_secret(env, secret_key):
    shown = platepipe("emulator", "--help", env=env)

    assert "demo-secret-key" in shown.stdout
    assert secret_key not in shown.stdout  # the real one, from the environment


def test_verbose_logs_one_line_per_call_and_no_driver_chatter(
    corpus, tmp_path, start_emulator, platepipe_env, secret_key
):
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url}

    result = platepipe("-v", *run_args(corpus, f"sqlite:///{tmp_path / 'p.db'}"), env=env)

    assert result.returncode == 0, result.stderr
    calls = [line for line in result.stderr.splitlines() if " call /" in line]
    assert len(calls) == emulator.stats()["calls"] == len(corpus.images)
    assert all(re.search(r": (0 done|4000201 no_plate) in ", line) for line in calls), calls
    assert "aiosqlite" not in result.stderr
    assert len(result.stderr.splitlines()) < 3 * len(corpus.images) + 20
    assert secret_key not in result.stderr


def test_store_open_read_only_cannot_write(tmp_path):
    url = seed(tmp_path / "plates.db", done=1)

    async def run() -> str:
        async with Store.connect(url, read_only=True) as store:
            try:
                await store.query("DELETE FROM items")
            except Exception as exc:  # any refusal will do; the row must stay
                return str(exc)
        return ""

    assert "readonly" in asyncio.run(run()).replace("-", "").replace(" ", "")
    assert query(url, "SELECT COUNT(*) FROM items") == [(1,)]
