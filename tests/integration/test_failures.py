"""A bad night: outages, dead endpoints, cost caps, time windows, a restarting database and
files that go wrong. Each ends in the right outcome, with nothing lost."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import asyncpg

from tests.conftest import APP_KEY, Emulator, emulator_argv
from tests.support.cli import platepipe, start_platepipe
from tests.support.corpus import make_corpus, make_image, sha256_file
from tests.support.db import query
from tests.support.reads import assert_reads_match


def statuses(db_url: str) -> dict[str, int]:
    return dict(query(db_url, "SELECT status, count(*) FROM items GROUP BY status"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_max_requests_caps_the_calls_and_a_rerun_finishes(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 30, large_every=0)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}

    capped = platepipe("run", "--job", "cap", str(corpus.root), "--max-requests", "10", env=env)

    assert capped.returncode == 3, capped.stderr
    assert emulator.stats()["calls"] == 10
    assert statuses(sqlite_url).get("done") == 10
    final = platepipe("run", "--job", "cap", "--rate", "200", env=env)
    assert final.returncode == 0, final.stderr
    assert emulator.stats()["calls"] == len(corpus.images)


def test_max_duration_stops_with_items_pending(tmp_path, sqlite_url, start_emulator, platepipe_env):
    corpus = make_corpus(tmp_path / "archive", 40, large_every=0)
    emulator = start_emulator("--latency", "0.1")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}
    started = time.monotonic()

    result = platepipe(
        "run", "--job", "window", str(corpus.root), "--rate", "5", "--max-duration", "2s", env=env
    )

    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < 15
    assert "time window" in result.stdout
    counts = statuses(sqlite_url)
    assert counts["pending"] > 0 and "running" not in counts and "failed" not in counts
    assert counts["done"] == emulator.stats()["calls"]


def test_a_wrong_endpoint_is_fatal_not_a_pile_of_failures(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 10, large_every=0)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url + "/wrong/prefix"}

    result = platepipe("run", "--job", "j", str(corpus.root), "--db", sqlite_url, env=env)

    assert result.returncode == 1
    assert "HTTP 404" in result.stderr and "Traceback" not in result.stderr
    assert "failed" not in statuses(sqlite_url)


def test_an_outage_longer_than_the_limit_exits_3_with_nothing_failed(
    tmp_path, sqlite_url, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 40, large_every=0)
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    args = ("run", "--job", "down", str(corpus.root), "--db", sqlite_url, "--rate", "100")

    result = platepipe(*args, "--max-outage", "3s", env=env)

    assert result.returncode == 3, result.stderr
    assert "unreachable" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    counts = statuses(sqlite_url)
    assert "failed" not in counts and counts["pending"] >= len(corpus.images)
    # Only the calls that revealed the outage cost attempts; the probes after it did not.
    (charged,) = query(sqlite_url, "SELECT count(*) FROM items WHERE attempts > 0")[0]
    assert charged <= 16 + 8
    (paused,) = query(sqlite_url, "SELECT count(*) FROM attempts WHERE outcome = 'paused'")[0]
    assert paused >= 1


def test_an_outage_is_waited_out_and_the_run_completes(
    tmp_path, sqlite_url, platepipe_env, secret_key
):
    corpus = make_corpus(tmp_path / "archive", 40, large_every=0)
    port = free_port()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": f"http://127.0.0.1:{port}"}
    run = start_platepipe(
        "run", "--job", "back", str(corpus.root), "--db", sqlite_url, "--rate", "100", env=env
    )
    time.sleep(4)  # the API is down: the breaker opens and probes
    emulator = subprocess.Popen(
        emulator_argv("--port", str(port), "--record"),
        stdout=subprocess.PIPE,
        text=True,
        env={**env, "NHN_OCR_APP_KEY": APP_KEY, "NHN_OCR_SECRET_KEY": secret_key},
    )
    try:
        assert "listening on" in emulator.stdout.readline()
        _out, err = run.communicate(timeout=120)

        assert run.returncode == 0, err
        assert "looks down" in err and "answers again" in err
        assert statuses(sqlite_url) == {"done": len(corpus.images), "skipped": len(corpus.bad)}
        answers = Emulator(f"http://127.0.0.1:{port}", emulator).stats()["answers"]
        assert_reads_match(sqlite_url, "back", corpus.images, answers)
    finally:
        run.kill()
        emulator.terminate()
        emulator.communicate(timeout=10)


def _terminate_backends(server_url: str, database: str, stop: threading.Event, kills: list) -> None:
    async def loop() -> None:
        connection = await asyncpg.connect(server_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            while not stop.is_set():
                await asyncio.sleep(0.7)
                killed = await connection.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()",
                    database,
                )
                kills.append(len(killed))
        finally:
            await connection.close()

    asyncio.run(loop())


def test_postgres_connections_cut_mid_run_lose_nothing(
    tmp_path, postgres_url, postgres_server_url, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 120, large_every=0)
    emulator = start_emulator("--latency", "0.02-0.05")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": postgres_url}
    run = start_platepipe("run", "--job", "pg", str(corpus.root), "--rate", "40", env=env)
    deadline = time.monotonic() + 30
    while emulator.stats()["calls"] == 0:  # mid-run: once it is submitting
        assert time.monotonic() < deadline and run.poll() is None
        time.sleep(0.02)
    stop, kills = threading.Event(), []
    killer = threading.Thread(
        target=_terminate_backends,
        args=(postgres_server_url, postgres_url.rsplit("/", 1)[1], stop, kills),
    )
    killer.start()
    try:
        _out, err = run.communicate(timeout=180)
    finally:
        stop.set()
        killer.join()

    assert run.returncode == 0, err
    assert sum(kills) >= 3, "the test should have cut live connections"
    assert statuses(postgres_url) == {"done": len(corpus.images), "skipped": len(corpus.bad)}
    (recognitions,) = query(postgres_url, "SELECT count(*) FROM recognitions")[0]
    assert recognitions == len(corpus.images)
    assert_reads_match(postgres_url, "pg", corpus.images, emulator.stats()["answers"])


def test_each_bad_input_gets_its_own_outcome(tmp_path, db_url, start_emulator, platepipe_env):
    root = tmp_path / "archive"
    good = root / "good.jpg"
    make_image(good, 80, 60, "JPEG", seed=1)
    (root / "zero.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("not a picture\n")
    (root / "huge.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * (5 * 1024 * 1024))
    truncated = root / "truncated.jpg"
    make_image(truncated, 400, 300, "JPEG", seed=2)
    truncated.write_bytes(truncated.read_bytes()[:1500])
    os.symlink(root / "nowhere.jpg", root / "broken link.jpg")
    os.symlink(root / "loop.jpg", root / "loop.jpg")
    (root / "folder.jpg").mkdir()
    odd_name = os.path.join(os.fsencode(str(root)), b"caf\xe9 latin-1.jpg")
    with open(odd_name, "wb") as f:
        make_image(tmp_path / "odd.jpg", 64, 48, "JPEG", seed=3)
        f.write((tmp_path / "odd.jpg").read_bytes())
    for n in range(3):
        make_image(root / f"later {n}.jpg", 64, 48, "JPEG", seed=10 + n)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
    # Scan everything, but spend a single call; then a file vanishes before its turn.
    first = platepipe("run", "--job", "bad", str(root), "--max-requests", "1", env=env)
    assert first.returncode == 3, first.stderr
    waiting = query(
        db_url, "SELECT path FROM items WHERE status = 'pending' AND path LIKE '%later%'"
    )
    doomed = Path(sorted(waiting)[0][0])
    doomed.unlink()

    result = platepipe("run", "--job", "bad", env=env)

    outcome = {
        Path(path).name: (status, code)
        for path, status, code in query(db_url, "SELECT path, status, error_code FROM items")
    }
    assert outcome.pop(doomed.name) == ("skipped", "missing")
    assert outcome == {
        "good.jpg": ("done", None),
        "zero.jpg": ("skipped", "empty"),
        "text.jpg": ("skipped", "not_image"),
        "huge.jpg": ("skipped", "undecodable"),  # over 5 MB, so fitted: and zeros do not decode
        "truncated.jpg": ("failed", "4000002"),
        "broken link.jpg": ("skipped", "missing"),
        "loop.jpg": ("skipped", "unreadable"),
        "caf\\xe9 latin-1.jpg": ("done", None),
        **{f"later {n}.jpg": ("done", None) for n in range(3) if f"later {n}.jpg" != doomed.name},
    }
    assert result.returncode == 4, result.stderr  # finished, with a failed item
    # good, truncated, the odd name and the two later files that stayed: nothing else
    assert emulator.stats()["calls"] == 5


def test_a_file_changed_since_it_was_done_is_sent_again(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 10, large_every=0)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}
    assert platepipe("run", "--job", "c", str(corpus.root), env=env).returncode == 0
    changed = corpus.images[3]
    make_image(changed, 90, 70, "PNG" if changed.suffix.lower() == ".png" else "JPEG", seed=99)

    again = platepipe("run", "--job", "c", str(corpus.root), env=env)

    assert again.returncode == 0, again.stderr
    stats = emulator.stats()
    assert stats["calls"] == len(corpus.images) + 1
    assert stats["by_sha256"][sha256_file(changed)] == 1
    assert_reads_match(sqlite_url, "c", corpus.images, stats["answers"])
    (recognitions,) = query(sqlite_url, "SELECT count(*) FROM recognitions")[0]
    assert recognitions == len(corpus.images)


def test_the_secret_reaches_no_output_and_no_table(
    tmp_path, db_url, start_emulator, platepipe_env, secret_key
):
    corpus = make_corpus(tmp_path / "archive", 40, large_every=0)
    emulator = start_emulator("--fault-rate", "0.3", "--slow-seconds", "1")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}

    result = platepipe(
        "-v", "run", "--job", "s", str(corpus.root), "--rate", "100", "--timeout", "0.5",
        "--backoff-base", "0.05", "--backoff-cap", "0.2", "--max-attempts", "12",
        env=env,
    )  # fmt: skip
    shown = [platepipe(*c, env=env) for c in (["status", "--json"], ["jobs"], ["status"])]

    assert result.returncode == 0, result.stderr[-2000:]
    for output in (result, *shown):
        assert secret_key not in output.stdout + output.stderr
    for table in ("jobs", "workers", "items", "recognitions", "plates", "attempts"):
        assert secret_key not in repr(query(db_url, f"SELECT * FROM {table}")), table


def test_runs_sharing_one_sqlite_file_never_see_it_locked(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    first = make_corpus(tmp_path / "first", 80, large_every=0)
    second = make_corpus(tmp_path / "second", 80, large_every=0)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}
    runs = [
        start_platepipe("run", "--job", name, str(c.root), "--rate", "150", env=env)
        for name, c in (("one", first), ("two", second))
    ]
    polls = []
    while any(r.poll() is None for r in runs):
        polls.append(platepipe("status", env=env))
    outputs = [r.communicate(timeout=60) for r in runs]

    assert [r.returncode for r in runs] == [0, 0], outputs
    for _out, err in outputs + [(p.stdout, p.stderr) for p in polls]:
        assert "locked" not in err.lower() and "Traceback" not in err
    # A poll before the first run has made the file and its tables finds none (status creates
    # nothing); every other one reads.
    early = [p for p in polls if "no database" in p.stderr or "no platepipe tables" in p.stderr]
    assert all(p.returncode == 1 for p in early)
    assert all(p.returncode == 0 for p in polls if p not in early)
    assert len(early) < len(polls)
    counts = dict(query(sqlite_url, "SELECT status, count(*) FROM items GROUP BY status"))
    assert counts["done"] == len(first.images) + len(second.images)


def test_answers_too_odd_for_the_columns_are_stored_cleaned(
    tmp_path, db_url, start_odd_server, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 6, large_every=0)
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": start_odd_server("odd-success")}

    result = platepipe("run", "--job", "odd", str(corpus.root), "--db", db_url, env=env)

    assert result.returncode == 0, result.stderr
    reads = query(db_url, "SELECT value, x1, file_type FROM plate_reads ORDER BY path, value")
    assert len(reads) == 2 * len(corpus.images)
    assert set(reads) == {("12가3456", None, "jpeg-bas"), ("34나5678", 1, "jpeg-bas")}


def test_a_garbage_body_is_a_retryable_bad_response(
    tmp_path, db_url, start_odd_server, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 4, large_every=0)
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": start_odd_server("garbage")}

    result = platepipe(
        "run", "--job", "g", str(corpus.root), "--db", db_url, "--max-attempts", "2",
        "--backoff-base", "0.05", env=env,
    )  # fmt: skip

    assert result.returncode == 4, result.stderr
    failed = query(db_url, "SELECT error_code, error_message FROM items WHERE status = 'failed'")
    assert len(failed) == len(corpus.images)
    assert all(code == "bad_response" and "\x00" not in message for code, message in failed)


def test_a_gateway_page_echoing_the_secret_is_stored_redacted(
    tmp_path, sqlite_url, start_odd_server, platepipe_env, secret_key
):
    corpus = make_corpus(tmp_path / "archive", 4, large_every=0)
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": start_odd_server("echo-502")}

    result = platepipe(
        "run", "--job", "e", str(corpus.root), "--db", sqlite_url, "--max-attempts", "2",
        "--backoff-base", "0.05", env=env,
    )  # fmt: skip

    assert result.returncode == 4, result.stderr
    messages = query(sqlite_url, "SELECT message FROM attempts")
    assert messages and all("Authorization: ***" in m for (m,) in messages)
    for table in ("items", "attempts"):
        assert secret_key not in repr(query(sqlite_url, f"SELECT * FROM {table}"))


def test_signals_and_windows_cut_even_a_long_retry_after(
    tmp_path, sqlite_url, start_odd_server, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 20, large_every=0)
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": start_odd_server("retry-after")}
    started = time.monotonic()

    result = platepipe(
        "run", "--job", "r", str(corpus.root), "--db", sqlite_url, "--max-duration", "2s",
        env=env, timeout=60,
    )  # fmt: skip

    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < 15
    counts = statuses(sqlite_url)
    assert "running" not in counts and "failed" not in counts


def test_a_second_signal_hurries_a_run_stopping_for_its_deadline(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 20, large_every=0)
    emulator = start_emulator("--latency", "20")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}
    run = start_platepipe("run", "--job", "h", str(corpus.root), "--max-duration", "1s", env=env)
    deadline = time.monotonic() + 30
    while "time window" not in (line := run.stderr.readline()):
        assert line and time.monotonic() < deadline, "the window should have closed"

    run.send_signal(signal.SIGINT)
    _out, err = run.communicate(timeout=10)

    assert run.returncode == 3, err
    assert "running" not in statuses(sqlite_url)


def test_a_call_limit_costs_images_no_attempts(tmp_path, sqlite_url, start_emulator, platepipe_env):
    corpus = make_corpus(tmp_path / "archive", 20, large_every=0)
    emulator = start_emulator("--rate-limit", "2")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}

    result = platepipe(
        "run", "--job", "t", str(corpus.root), "--rate", "50", "--max-attempts", "3",
        "--backoff-base", "0.2", "--backoff-cap", "1", env=env, timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-2000:]
    assert statuses(sqlite_url) == {"done": len(corpus.images), "skipped": len(corpus.bad)}
    assert emulator.stats()["rate_limited"] > 0
    # Every call is on record, numbered 1, 2, 3, ... per image whatever its outcome.
    rows = query(sqlite_url, "SELECT item_id, attempt, outcome FROM attempts ORDER BY id")
    assert "throttled" in {outcome for _, _, outcome in rows}
    numbers: dict[int, list[int]] = {}
    for item_id, attempt, _ in rows:
        numbers.setdefault(item_id, []).append(attempt)
    assert all(n == list(range(1, len(n) + 1)) for n in numbers.values()), numbers
    (calls,) = query(sqlite_url, "SELECT calls FROM jobs")[0]
    assert calls == len(rows) == emulator.stats()["calls"]


def test_a_file_turned_bad_since_it_was_done_loses_its_old_reads(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 12, large_every=0)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}
    assert platepipe("run", "--job", "c", str(corpus.root), env=env).returncode == 0
    with_reads = {p for (p,) in query(sqlite_url, "SELECT DISTINCT path FROM plate_reads")}
    spoiled = Path(sorted(with_reads)[0])
    spoiled.write_text("overwritten by a text file\n")

    again = platepipe("run", "--job", "c", str(corpus.root), env=env)

    assert again.returncode == 0, again.stderr
    assert query(
        sqlite_url, "SELECT status, error_code FROM items WHERE path = :p", p=str(spoiled)
    ) == [("skipped", "not_image")]
    assert query(
        sqlite_url, "SELECT count(*) FROM plate_reads WHERE path = :p", p=str(spoiled)
    ) == [(0,)]
    (recognitions,) = query(sqlite_url, "SELECT count(*) FROM recognitions")[0]
    assert recognitions == len(corpus.images) - 1


def test_a_throttle_that_never_ends_stops_once_max_outage_has_passed(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 6, large_every=0)
    emulator = start_emulator("--fault-rate", "1", "--faults", "4000006")  # a spent quota
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}

    started = time.monotonic()
    result = platepipe(
        "run", "--job", "quota", str(corpus.root), "--max-outage", "3s", env=env, timeout=60
    )

    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < 30
    assert "call limit" in result.stderr and "4000006" in result.stderr
    assert statuses(sqlite_url) == {"pending": len(corpus.images), "skipped": len(corpus.bad)}
    assert query(sqlite_url, "SELECT max(attempts) FROM items") == [(0,)]
