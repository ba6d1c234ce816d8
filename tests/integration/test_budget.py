"""`--daily-budget` across runs, jobs and workers, and `platepipe usage`: real runs against the
emulator (which counts the calls it got) on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import text

from pipeline import db
from pipeline.records import (
    Answer,
    Call,
    CallResult,
    Found,
    Hold,
    ItemStatus,
    Outcome,
    utcnow,
)
from pipeline.store import Store
from pipeline.usage import local_day
from tests.integration.test_migrations import alembic
from tests.support.cli import platepipe, start_platepipe
from tests.support.corpus import make_image
from tests.support.db import query

BUDGET = 10


def make_images(root: Path, n: int, seed: int) -> list[Path]:
    paths = [root / f"{i:03d}.jpg" for i in range(n)]
    for i, path in enumerate(paths):
        make_image(path, 160, 120, "JPEG", seed=seed + i)
    return paths


def execute(url: str, *statements: str) -> None:
    async def run() -> None:
        engine = db.create_engine(url)
        try:
            async with engine.begin() as connection:
                for statement in statements:
                    await connection.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run())


def statuses(url: str, job: str) -> dict[str, int]:
    rows = query(
        url,
        "SELECT i.status, COUNT(*) FROM items i JOIN jobs j ON j.id = i.job_id "
        f"WHERE j.name = '{job}' GROUP BY i.status",
    )
    return dict(rows)


def usage_calls(url: str) -> dict[str, int]:
    rows = query(
        url,
        "SELECT j.name, SUM(u.calls) FROM usage u JOIN jobs j ON j.id = u.job_id GROUP BY j.name",
    )
    return {name: int(calls) for name, calls in rows}


def test_the_budget_holds_across_runs_and_jobs(tmp_path, db_url, start_emulator, platepipe_env):
    make_images(tmp_path / "a", 12, seed=1)
    make_images(tmp_path / "b", 6, seed=100)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
    budget = ("--daily-budget", str(BUDGET))

    # A first run capped by --max-requests spends 4 of the day's 10.
    first = platepipe("run", "--job", "a", str(tmp_path / "a"), "--max-requests", "4", *budget,
                      "--rate", "200", "--quiet", env=env)  # fmt: skip
    assert first.returncode == 3, first.stderr
    assert emulator.stats()["calls"] == 4
    assert f"daily budget: 4 of {BUDGET} calls spent" in first.stdout

    # The rerun (budget from the environment) spends the other 6 and stops, items pending.
    second = platepipe("run", "--job", "a", "--rate", "200", "--quiet",
                       env={**env, "PLATEPIPE_RUN_DAILY_BUDGET": str(BUDGET)})  # fmt: skip
    assert second.returncode == 3, second.stderr
    assert emulator.stats()["calls"] == BUDGET
    assert statuses(db_url, "a") == {"done": BUDGET, "pending": 2}
    assert f"the daily budget of {BUDGET} calls is spent for {local_day()}" in second.stdout
    assert "the day ends at" in second.stdout

    # Another job, the same day: no call at all.
    other = platepipe("run", "--job", "b", str(tmp_path / "b"), *budget, "--quiet", env=env)
    assert other.returncode == 3, other.stderr
    assert "Traceback" not in other.stderr
    assert emulator.stats()["calls"] == BUDGET
    assert statuses(db_url, "b") == {"pending": 6}
    assert "daily budget" in other.stdout

    # The dry run knows: nothing left today.
    planned = platepipe("run", "--job", "a", *budget, "--dry-run", env=env)
    assert "would make 0 calls (--daily-budget" in planned.stdout, planned.stdout

    # A run again after the budget: 0 calls.
    again = platepipe("run", "--job", "a", *budget, "--quiet", env=env)
    assert again.returncode == 3, again.stderr
    assert emulator.stats()["calls"] == BUDGET
    assert usage_calls(db_url) == {"a": BUDGET}
    # Every hold ended with its call, and went with its worker at the clean exit.
    assert query(db_url, "SELECT COUNT(*) FROM budget_holds") == [(0,)]
    assert query(db_url, "SELECT COUNT(*) FROM workers") == [(0,)]
    status = platepipe("status", *budget, env=env)
    assert f"daily budget: {BUDGET} of {BUDGET} calls spent on {local_day()}" in status.stdout


def test_two_work_processes_never_overspend_a_shared_budget(
    tmp_path, postgres_url, start_emulator, platepipe_env
):
    make_images(tmp_path / "shared", 60, seed=7)
    emulator = start_emulator("--latency", "0.1-0.3")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": postgres_url}
    assert platepipe("scan", "--job", "shared", str(tmp_path / "shared"), env=env).returncode == 0
    budget = 25
    args = ("work", "--job", "shared", "--rate", "40", "--concurrency", "8", "--quiet")
    workers = [start_platepipe(*args, "--daily-budget", str(budget), env=env) for _ in range(2)]
    results = [w.communicate(timeout=120) for w in workers]

    assert [w.returncode for w in workers] == [3, 3], results
    calls = emulator.stats()["calls"]
    assert calls <= budget
    assert calls == budget  # 60 images: both went on until the day's budget was spent
    assert usage_calls(postgres_url) == {"shared": calls}
    assert statuses(postgres_url, "shared") == {"done": calls, "pending": 60 - calls}


def test_a_call_that_never_reached_the_api_gives_its_hold_back(db_url):
    day = local_day()

    async def run() -> tuple[int, int, int]:
        async with Store.connect(db_url) as store:
            job = await store.ensure_job("j", create=True)
            await store.register_worker(job, "w-1")
            await store.add_found(job, [Found("/a.jpg", 1, 0.0), Found("/b.jpg", 1, 0.0)])
            claimed = await store.claim_batch(job, "w-1", 2)
            spans = []
            for reached, item in zip((False, True), claimed, strict=True):
                reservation = await store.reserve_call("w-1", day, 5)
                assert reservation.granted
                spans.append(await store.day_spend(day))
                call = Call(utcnow(), _answer(reached), CallResult.RETRY, hold=Hold("w-1", day))
                outcome = Outcome(item.id, ItemStatus.PENDING, 1, "x", "y", call=call)
                await store.record_outcomes([outcome], job, "w-1")
            spent = await store.day_spend(day)
            await store.unregister_worker("w-1")
            return spans[0], spans[1], spent

    held_refused, held_sent, spent = asyncio.run(run())
    assert (held_refused, held_sent) == (1, 1)  # the refused call's hold was given back
    assert spent == 1  # only the call that reached the API is spent
    assert query(db_url, "SELECT day, calls FROM usage") == [(day, 1)]


def _answer(reached: bool) -> Answer:
    if reached:
        return Answer("-1", "unknown error", 0.01)
    return Answer("connection_refused", "refused", 0.0, reached=False)


def test_refused_calls_do_not_spend_the_budget(tmp_path, sqlite_url, platepipe_env):
    make_images(tmp_path / "a", 4, seed=3)
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {
        **platepipe_env,
        "NHN_OCR_ENDPOINT": f"http://127.0.0.1:{port}",
        "PLATEPIPE_DB": sqlite_url,
    }

    # One call a second, one at a time, a budget of one: had the first refused call kept its
    # hold, the second could not start and the budget would stop the run.
    run = platepipe("run", "--job", "a", str(tmp_path / "a"), "--daily-budget", "1",
                    "--rate", "1", "--concurrency", "1", "--max-duration", "4", "--quiet",
                    env=env)  # fmt: skip

    assert run.returncode == 3, run.stderr
    assert "time window is over" in run.stdout
    assert "budget" not in run.stdout.replace("daily budget: 0 of 1", "")
    assert query(sqlite_url, "SELECT COUNT(*) FROM attempts")[0][0] >= 2
    assert query(sqlite_url, "SELECT COUNT(*) FROM usage") == [(0,)]


def test_usage_shows_days_and_jobs_newest_first(tmp_path, db_url, start_emulator, platepipe_env):
    make_images(tmp_path / "a", 3, seed=11)
    make_images(tmp_path / "b", 2, seed=21)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
    for job in ("a", "b"):
        assert (
            platepipe("run", "--job", job, str(tmp_path / job), "--quiet", env=env).returncode == 0
        )
    today = local_day()
    yesterday = local_day(utcnow() - timedelta(days=1))
    long_ago = local_day(utcnow() - timedelta(days=40))
    execute(
        db_url,
        "INSERT INTO usage (day, job_id, calls, copies, fits) "
        f"SELECT '{yesterday}', id, 7, 2, 1 FROM jobs WHERE name = 'a'",
        "INSERT INTO usage (day, job_id, calls, copies, fits) "
        f"SELECT '{long_ago}', id, 100, 0, 0 FROM jobs WHERE name = 'a'",
    )

    shown = platepipe("usage", env=env)
    as_json = platepipe("usage", "--json", "--daily-budget", "50", env=env)
    wider = platepipe("usage", "--days", "60", "--json", env=env)

    assert shown.returncode == 0, shown.stderr
    lines = [line.split() for line in shown.stdout.strip().splitlines()]
    assert lines[0] == ["day", "job", "calls", "copies", "fits"]
    assert lines[1:] == [
        [today, "a", "3", "0", "0"],
        [today, "b", "2", "0", "0"],
        [today, "(day", "total)", "5", "0", "0"],
        [yesterday, "a", "7", "2", "1"],
        [yesterday, "(day", "total)", "7", "2", "1"],
        ["total", "last", "30", "days", "12", "2", "1"],
    ]
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["rows"] == [
        {"day": today, "job": "a", "calls": 3, "copies": 0, "fits": 0},
        {"day": today, "job": "b", "calls": 2, "copies": 0, "fits": 0},
        {"day": yesterday, "job": "a", "calls": 7, "copies": 2, "fits": 1},
    ]
    assert report["per_day"] == [
        {"day": today, "calls": 5, "copies": 0, "fits": 0},
        {"day": yesterday, "calls": 7, "copies": 2, "fits": 1},
    ]
    assert report["total"] == {"calls": 12, "copies": 2, "fits": 1}
    assert report["budget"] == {"day": today, "limit": 50, "spent": 5}
    assert json.loads(wider.stdout)["total"]["calls"] == 112


def test_usage_creates_nothing_and_asks_for_an_upgrade(tmp_path, db_url, platepipe_env):
    missing = tmp_path / "nowhere.db"
    absent = platepipe("usage", "--db", f"sqlite:///{missing}", env=platepipe_env)

    assert absent.returncode == 1
    assert absent.stderr.strip().count("\n") == 0 and "no database at" in absent.stderr
    assert not missing.exists() and list(tmp_path.iterdir()) == []

    assert alembic("upgrade", "0008", url=db_url).returncode == 0
    older = platepipe("usage", "--db", db_url, env=platepipe_env)
    assert older.returncode == 1
    assert "platepipe db upgrade" in older.stderr and "Traceback" not in older.stderr
    assert query(db_url, "SELECT version_num FROM alembic_version") == [("0008",)]


def test_0009_fills_usage_from_the_recorded_calls(db_url):
    assert alembic("upgrade", "0008", url=db_url).returncode == 0
    when = "'2026-11-24 00:00:00'"
    attempts = [  # (item, attempt, started_at, code)
        (1, 1, "2026-11-24 23:59:59", "-1"),
        (1, 2, "2026-11-25 00:00:01", "0"),
        (2, 1, "2026-11-24 10:00:00", "connection_refused"),  # never reached the API
        (2, 2, "2026-11-24 10:00:05", "timeout"),
        (3, 1, "2026-11-25 08:00:00", "0"),
    ]
    execute(
        db_url,
        f"INSERT INTO jobs (id, name, created_at, updated_at) VALUES (1, 'x', {when}, {when})",
        f"INSERT INTO jobs (id, name, created_at, updated_at) VALUES (2, 'y', {when}, {when})",
        *(
            "INSERT INTO items (id, job_id, path, size, mtime, status, attempts, created_at, "
            f"updated_at) VALUES ({i}, {job}, '/{i}.jpg', 1, 0, 'done', 1, {when}, {when})"
            for i, job in ((1, 1), (2, 1), (3, 2))
        ),
        *(
            "INSERT INTO attempts (item_id, attempt, started_at, duration_ms, outcome, code) "
            f"VALUES ({item}, {n}, '{at}', 5, 'done', '{code}')"
            for item, n, at, code in attempts
        ),
    )

    assert alembic("upgrade", "head", url=db_url).returncode == 0

    rows = query(db_url, "SELECT day, job_id, calls, copies, fits FROM usage ORDER BY day, job_id")
    assert [tuple(int(v) if i else v for i, v in enumerate(r)) for r in rows] == [
        ("2026-11-24", 1, 2, 0, 0),
        ("2026-11-25", 1, 1, 0, 0),
        ("2026-11-25", 2, 1, 0, 0),
    ]


def test_a_killed_run_s_holds_count_until_its_registration_is_reaped(
    tmp_path, db_url, start_emulator, platepipe_env
):
    make_images(tmp_path / "a", 8, seed=40)
    emulator = start_emulator("--latency", "3-4")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
    args = ("--daily-budget", "100", "--rate", "100", "--concurrency", "4", "--quiet")
    killed = start_platepipe("run", "--job", "a", str(tmp_path / "a"), *args, env=env)
    try:
        started = time.monotonic()
        while emulator.stats()["in_flight"] < 4:  # four calls out, none answered yet
            assert killed.poll() is None and time.monotonic() - started < 60
            time.sleep(0.05)
    finally:
        killed.kill()
        killed.communicate()

    # The calls it had out may well have been paid: they count against the day.
    assert query(db_url, "SELECT SUM(held) FROM budget_holds")[0][0] == 4
    assert query(db_url, "SELECT COUNT(*) FROM usage") == [(0,)]

    rerun = platepipe("run", "--job", "a", *args, env=env)

    assert rerun.returncode == 0, rerun.stderr
    assert "taking over from `run`" in rerun.stderr
    assert query(db_url, "SELECT COUNT(*) FROM budget_holds") == [(0,)]  # reaped with it
    assert usage_calls(db_url) == {"a": 8}
    assert emulator.stats()["calls"] == 12
