"""Operating it every night, as an operator does from cron and a shell: retry, export, config,
dry runs, capture metadata, JSON logs, status and jobs. Real emulator processes, a real SQLite
file and (with `db_url`) a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import signal
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import text

from pipeline.emulator import synthetic_result
from pipeline.store import Store
from tests.support.cli import platepipe, start_platepipe
from tests.support.corpus import make_corpus, make_image, sha256_file
from tests.support.db import query

FAST = ("--rate", "400")
BOX = ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4")
TIMES = ("recognized_at", "captured_at")
CAPTURE_PATTERN = r"(?P<camera>cam\d+)/(?P<date>\d{8})_(?P<time>\d{6})"


# -- helpers ---------------------------------------------------------------------------------


def assert_one_line_error(result, code: int) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr


def item_states(db_url: str) -> dict[str, tuple[str, int, str | None]]:
    """path -> (status, attempts, error_code)."""
    rows = query(db_url, "SELECT path, status, attempts, error_code FROM items")
    return {path: (status, attempts, code) for path, status, attempts, code in rows}


def as_datetime(value: Any) -> datetime | None:
    """A timestamp as SQLite (text), PostgreSQL (datetime), CSV or JSON gives it."""
    if value in (None, ""):
        return None
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def typed(column: str, value: Any) -> Any:
    """One plate_reads value in a form that compares equal whatever carried it."""
    if value in (None, ""):
        return None
    if column in TIMES:
        return as_datetime(value)
    if column == "conf":
        return float(value)
    if column in BOX:
        return int(value)
    return str(value)


def select_with_columns(db_url: str, sql: str, **params: Any) -> tuple[list[str], list[tuple]]:
    async def run() -> tuple[list[str], list[tuple]]:
        async with (
            Store.connect(db_url, migrate=False) as store,
            store.engine.connect() as connection,
        ):
            result = await connection.execute(text(sql), params)
            return list(result.keys()), [tuple(row) for row in result.all()]

    return asyncio.run(run())


def image_with_plates(path: Path, *, seed: int, exif_when: str | None = None) -> None:
    """A JPEG (with EXIF DateTimeOriginal if asked) the emulator answers with 1+ plates."""
    width, height = 320, 240
    for attempt in range(seed, seed + 200):
        make_image(path, width, height, "JPEG", seed=attempt)
        if exif_when is not None:
            with Image.open(path) as image:
                image.load()
                exif = Image.Exif()
                exif.get_ifd(0x8769)[36867] = exif_when
                buf = io.BytesIO()
                image.save(buf, "JPEG", exif=exif)
            path.write_bytes(buf.getvalue())
        if synthetic_result(path.read_bytes(), width, height, "jpg")["values"]:
            return
    raise AssertionError("no seed gave an image with plates")


def config_lines(output: str) -> dict[str, tuple[str, str]]:
    """`platepipe config` output as key -> (value, source)."""
    shown = {}
    for line in output.splitlines():
        found = re.fullmatch(r"(\w+) = (.*?)  # (.*)", line)
        if found:
            shown[found[1]] = (found[2], found[3])
    return shown


# -- retry -----------------------------------------------------------------------------------


def test_retry_by_code_then_run_sends_only_those(tmp_path, db_url, start_emulator, platepipe_env):
    corpus = make_corpus(tmp_path / "archive", 10, large_every=0)
    images = {str(p) for p in corpus.images}
    broken = start_emulator("--fault-rate", "1", "--faults", "5000001")
    env = {**platepipe_env, "PLATEPIPE_DB": db_url}

    first = platepipe(
        "run", "--job", "J", str(corpus.root), "--endpoint", broken.url,
        "--max-attempts", "1", *FAST, env=env,
    )  # fmt: skip

    assert first.returncode == 4, first.stdout + first.stderr
    assert broken.stats()["calls"] == len(images)
    states = item_states(db_url)
    assert {p: states[p] for p in images} == dict.fromkeys(images, ("failed", 1, "5000001"))
    skipped_sql = (
        "SELECT path, status, attempts, error_code, updated_at FROM items "
        "WHERE status = 'skipped' ORDER BY path"
    )
    skipped = query(db_url, skipped_sql)
    assert {(Path(r[0]), r[1], r[3]) for r in skipped} == {
        (p, "skipped", code) for p, code in corpus.bad.items()
    }

    nobody = platepipe("retry", "--job", "J", "--code", "4000002", env=env)

    assert nobody.returncode == 0, nobody.stderr
    assert nobody.stdout.startswith("0 items"), nobody.stdout
    assert item_states(db_url) == states

    healthy = start_emulator()
    retried = platepipe("retry", "--job", "J", "--code", "5000001", env=env)

    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith(f"{len(images)} items"), retried.stdout
    states = item_states(db_url)
    assert {p: states[p] for p in images} == dict.fromkeys(images, ("pending", 0, None))
    assert query(db_url, skipped_sql) == skipped

    rerun = platepipe("run", "--job", "J", "--endpoint", healthy.url, *FAST, env=env)

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    stats = healthy.stats()
    assert stats["calls"] == len(images)
    assert stats["by_sha256"] == {sha256_file(Path(p)): 1 for p in images}
    assert broken.stats()["calls"] == len(images)
    states = item_states(db_url)
    assert {p: states[p][0] for p in images} == dict.fromkeys(images, "done")
    assert query(db_url, skipped_sql) == skipped


def test_retry_done_replaces_results_and_retry_empty_skips_again(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 8, large_every=0)
    (empty,) = (p for p, code in corpus.bad.items() if code == "empty")
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}
    plates_sql = (
        "SELECT i.path, p.idx, p.value, p.conf, p.x1, p.y1 FROM plates p "
        "JOIN items i ON i.id = p.item_id ORDER BY i.path, p.idx"
    )
    recognitions_sql = (
        "SELECT i.path, count(r.item_id), max(r.recognized_at) FROM items i "
        "LEFT JOIN recognitions r ON r.item_id = i.id WHERE i.status = 'done' GROUP BY i.path"
    )
    first = platepipe("run", "--job", "J", str(corpus.root), *FAST, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    plates = query(sqlite_url, plates_sql)
    assert plates
    before = {path: as_datetime(at) for path, _n, at in query(sqlite_url, recognitions_sql)}
    assert before.keys() == {str(p) for p in corpus.images}

    redo = platepipe("retry", "--job", "J", "--done", env=env)
    again = platepipe("retry", "--job", "J", "--code", "empty", env=env)

    assert redo.returncode == 0 and redo.stdout.startswith(f"{len(corpus.images)} items")
    assert again.returncode == 0 and again.stdout.startswith("1 item of"), again.stdout
    states = item_states(sqlite_url)
    assert {p for p, s in states.items() if s[0] == "pending"} == before.keys() | {str(empty)}
    assert query(sqlite_url, plates_sql) == plates  # kept until new results replace them

    rerun = platepipe("run", "--job", "J", *FAST, env=env)

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    stats = emulator.stats()
    assert stats["by_sha256"] == {sha256_file(p): 2 for p in corpus.images}
    after = {path: (n, as_datetime(at)) for path, n, at in query(sqlite_url, recognitions_sql)}
    assert after.keys() == before.keys()
    for path, (count, recognized_at) in after.items():
        assert count == 1, path
        assert recognized_at > before[path], path
    assert query(sqlite_url, plates_sql) == plates  # same answers, replaced, not duplicated
    assert item_states(sqlite_url)[str(empty)] == ("skipped", 0, "empty")


# -- export ----------------------------------------------------------------------------------


def test_export_csv_and_jsonl_hold_exactly_plate_reads(
    tmp_path, db_url, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 16, large_every=8)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
    ran = platepipe(
        "run", "--job", "J", str(corpus.root), "--capture-pattern", r"(?P<camera>cam \d+)",
        *FAST, env=env,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    columns, rows = select_with_columns(db_url, "SELECT * FROM plate_reads WHERE job = :j", j="J")
    assert {"camera", "captured_at", "conf", *BOX} <= set(columns)
    expected = Counter(
        tuple(typed(c, v) for c, v in zip(columns, row, strict=True)) for row in rows
    )
    assert len(rows) > 5
    assert any(row[columns.index("camera")] == "cam 02" for row in rows)
    assert all(row[columns.index("captured_at")] is not None for row in rows)

    as_csv = platepipe("export", "--job", "J", "--format", "csv", env=env)

    assert as_csv.returncode == 0, as_csv.stderr
    reader = csv.DictReader(io.StringIO(as_csv.stdout, newline=""))
    exported = [tuple(typed(c, record[c]) for c in columns) for record in reader]
    assert reader.fieldnames == columns
    assert len(exported) == len(rows)
    assert Counter(exported) == expected

    out = tmp_path / "reads.jsonl"
    as_jsonl = platepipe("export", "--job", "J", "--format", "jsonl", "-o", str(out), env=env)

    assert as_jsonl.returncode == 0, as_jsonl.stderr
    assert as_jsonl.stdout == ""
    assert not Path(f"{out}.partial").exists()
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert all(list(record) == columns for record in records)
    assert len(records) == len(rows)
    assert Counter(tuple(typed(c, r[c]) for c in columns) for r in records) == expected

    unknown = platepipe("export", "--job", "nope", "--format", "csv", env=env)

    assert_one_line_error(unknown, 2)  # an unknown job is a usage error, as for `run`
    assert "nope" in unknown.stderr


def test_export_in_an_unknown_format_is_a_usage_error(sqlite_url, platepipe_env):
    result = platepipe(
        "export", "--job", "J", "--format", "xml", "--db", sqlite_url, env=platepipe_env
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "xml" in result.stderr


# -- config ----------------------------------------------------------------------------------


def test_config_shows_each_setting_and_where_it_comes_from(tmp_path, platepipe_env, secret_key):
    config = tmp_path / "platepipe.toml"
    config.write_text("rate = 7.5\nconcurrency = 3\nbackoff_cap = 33.0\n")
    env = {**platepipe_env, "PLATEPIPE_DB": "sqlite:///elsewhere.db"}

    shown = platepipe("--config", str(config), "config", "--rate", "9", env=env, cwd=tmp_path)

    assert shown.returncode == 0, shown.stderr
    lines = config_lines(shown.stdout)
    assert lines["rate"] == ("9.0", "flag")
    assert lines["concurrency"] == ("3", "config file")
    assert lines["backoff_cap"] == ("33.0", "config file")
    # A relative SQLite file is shown as the file it means here.
    assert lines["db"] == (f'"sqlite:///{tmp_path / "elsewhere.db"}"', "environment")
    assert lines["max_attempts"] == ("5", "default")
    assert lines["timeout"] == ("30.0", "default")
    assert lines["include"] == ('["*.jpg", "*.jpeg", "*.png"]', "default")
    assert "# secret key: *** from the environment (NHN_OCR_SECRET_KEY)" in shown.stdout
    assert secret_key not in shown.stdout + shown.stderr

    # PLATEPIPE_CONFIG names the file as --config does; a secret file shows by name only.
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret_key + "\n")
    config.write_text(f"rate = 7.5\nsecret_key_file = {json.dumps(str(secret_file))}\n")
    no_secret = {k: v for k, v in env.items() if k != "NHN_OCR_SECRET_KEY"}

    by_env = platepipe("config", env={**no_secret, "PLATEPIPE_CONFIG": str(config)})

    assert by_env.returncode == 0, by_env.stderr
    lines = config_lines(by_env.stdout)
    assert lines["rate"] == ("7.5", "config file")
    assert lines["concurrency"] == ('"auto"', "default")
    assert lines["secret_key_file"] == (json.dumps(str(secret_file)), "config file")
    assert secret_key not in by_env.stdout + by_env.stderr


def test_config_shows_the_environment_run_reads(tmp_path, platepipe_env):
    config = tmp_path / "platepipe.toml"
    config.write_text("concurrency = 3\n")
    env = {**platepipe_env, "PLATEPIPE_RUN_CONCURRENCY": "4"}

    shown = platepipe("--config", str(config), "config", env=env)

    assert shown.returncode == 0, shown.stderr
    assert config_lines(shown.stdout)["concurrency"] == ("4", "environment")


def test_run_takes_the_file_and_platepipe_run_variables(
    tmp_path, sqlite_url, start_emulator, platepipe_env, secret_key
):
    root = tmp_path / "archive"
    jpegs = [root / f"j{n}.jpg" for n in range(3)]
    for n, path in enumerate(jpegs):
        make_image(path, 64, 48, "JPEG", seed=n)
    for n in range(2):
        make_image(root / f"p{n}.png", 64, 48, "PNG", seed=10 + n)
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret_key + "\n")
    config = tmp_path / "platepipe.toml"
    config.write_text(
        f'include = ["*.png"]\nrate = 400.0\nsecret_key_file = {json.dumps(str(secret_file))}\n'
    )
    emulator = start_emulator()
    env = {k: v for k, v in platepipe_env.items() if k != "NHN_OCR_SECRET_KEY"}
    env |= {"NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_RUN_INCLUDE": "*.jpg"}

    ran = platepipe(
        "--config", str(config), "run", "--job", "J", str(root), "--db", sqlite_url, env=env
    )

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert item_states(sqlite_url) == {str(p): ("done", 1, None) for p in jpegs}
    assert emulator.stats()["calls"] == len(jpegs)
    assert secret_key not in ran.stdout + ran.stderr


def test_bad_config_files_are_one_line_errors(tmp_path, platepipe_env):
    cases = {"rat = 7.5\n": "'rat'", 'rate = "fast"\n': "rate", "rate = = 1\n": "TOML"}
    for n, (content, named) in enumerate(cases.items()):
        config = tmp_path / f"bad{n}.toml"
        config.write_text(content)

        result = platepipe("--config", str(config), "config", env=platepipe_env)

        assert_one_line_error(result, 1)
        assert named in result.stderr, result.stderr


# -- dry run ---------------------------------------------------------------------------------


def dry_run_numbers(output: str) -> dict[str, int]:
    found = re.search(
        r"(\d+) files found; (\d+) new, \d+ changed, (\d+) pending, (\d+) already finished, "
        r"(\d+) would be skipped without a call.*?would make (\d+) calls",
        output,
        re.DOTALL,
    )
    assert found, output
    keys = ("files", "new", "pending", "finished", "local_skips", "calls")
    return dict(zip(keys, map(int, found.groups()), strict=True))


def test_dry_run_spends_nothing_and_counts_what_a_run_would_send(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    for n in range(10):
        make_image(root / "a" / f"a{n:02d}.jpg", 64, 48, "JPEG", seed=n)
    for n in range(4):
        make_image(root / "b" / f"b{n:02d}.png", 64, 48, "PNG", seed=100 + n)
    (root / "a" / "zero.jpg").write_bytes(b"")
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}
    db_file = Path(sqlite_url.removeprefix("sqlite:///"))

    fresh = platepipe("run", "--job", "J", str(root), "--dry-run", "--rate", "7", env=env)

    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert not db_file.exists()
    assert emulator.stats()["calls"] == 0
    assert dry_run_numbers(fresh.stdout) == dict(
        files=15, new=15, pending=0, finished=0, local_skips=1, calls=14
    )
    assert "2s at 7 requests/s" in fresh.stdout  # 14 calls at 7/s

    half = platepipe("run", "--job", "J", str(root / "a"), "--max-requests", "5", *FAST, env=env)
    assert half.returncode == 3, half.stdout + half.stderr
    assert emulator.stats()["calls"] == 5
    known = dict(query(sqlite_url, "SELECT path, status FROM items"))
    assert Counter(known.values())["done"] == 5

    planned = platepipe("run", "--job", "J", str(root), "--dry-run", env=env)

    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert emulator.stats()["calls"] == 5
    assert dict(query(sqlite_url, "SELECT path, status FROM items")) == known
    files = [p for p in root.rglob("*") if p.is_file()]
    new = [p for p in files if str(p) not in known]
    pending = sum(status in ("pending", "running") for status in known.values())
    finished = sum(str(p) in known and known[str(p)] not in ("pending", "running") for p in files)
    # the empty file, if still to send (new, or claimed too late for the capped run to skip it)
    unsent = [p for p in files if known.get(str(p), "pending") in ("pending", "running")]
    local_skips = sum(p.stat().st_size == 0 for p in unsent)
    assert len(new) >= 4 and pending >= 5 and finished >= 5
    assert dry_run_numbers(planned.stdout) == dict(
        files=15,
        new=len(new),
        pending=pending,
        finished=finished,
        local_skips=local_skips,
        calls=len(new) + pending - local_skips,
    )


# -- capture metadata ------------------------------------------------------------------------


def test_capture_metadata_from_path_then_exif_then_mtime(
    tmp_path, db_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    by_path = root / "cam07" / "20261124_231502.jpg"
    image_with_plates(by_path, seed=1, exif_when="2020:01:01 00:00:00")  # the path wins
    by_exif = root / "other" / "taken.jpg"
    image_with_plates(by_exif, seed=300, exif_when="2025:01:02 03:04:05")
    by_mtime = root / "other" / "plain.jpg"
    image_with_plates(by_mtime, seed=600)
    for path in (by_path, by_exif, by_mtime):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}

    ran = platepipe(
        "run", "--job", "J", str(root), "--capture-pattern", CAPTURE_PATTERN, *FAST, env=env
    )

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert emulator.stats()["by_code"] == {"0": 3}
    stored = {
        path: (status, camera, as_datetime(at))
        for path, status, camera, at in query(
            db_url, "SELECT path, status, camera, captured_at FROM items"
        )
    }
    assert stored == {
        str(by_path): ("done", "cam07", datetime(2026, 11, 24, 23, 15, 2)),
        str(by_exif): ("done", None, datetime(2025, 1, 2, 3, 4, 5)),
        str(by_mtime): ("done", None, datetime.fromtimestamp(1_700_000_000)),
    }
    reads = query(db_url, "SELECT path, camera, captured_at FROM plate_reads WHERE job = :j", j="J")
    assert {path for path, _c, _t in reads} == set(stored)
    for path, camera, captured_at in reads:
        assert (camera, as_datetime(captured_at)) == stored[path][1:], path


def test_a_bad_capture_pattern_is_a_usage_error(tmp_path, sqlite_url, platepipe_env):
    make_image(tmp_path / "archive" / "x.jpg", 64, 48, "JPEG", seed=1)

    result = platepipe(
        "run", "--job", "J", str(tmp_path / "archive"), "--db", sqlite_url,
        "--capture-pattern", "(?P<camera>", env=platepipe_env,
    )  # fmt: skip

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "capture" in result.stderr
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()


# -- logging ---------------------------------------------------------------------------------


def test_log_json_writes_only_json_lines_and_a_plain_summary(
    tmp_path, sqlite_url, start_emulator, platepipe_env, secret_key
):
    corpus = make_corpus(tmp_path / "archive", 6, large_every=0)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}

    ran = platepipe("--log-json", "run", "--job", "J", str(corpus.root), *FAST, env=env)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    assert lines
    for line in lines:
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
    assert ran.stdout.startswith("job J:")
    assert f"done {len(corpus.images)}" in ran.stdout
    assert not any(line.lstrip().startswith("{") for line in ran.stdout.splitlines())
    assert secret_key not in ran.stdout + ran.stderr


def test_log_json_keeps_a_fatal_error_as_json(tmp_path, sqlite_url, start_emulator, platepipe_env):
    make_image(tmp_path / "archive" / "x.jpg", 64, 48, "JPEG", seed=1)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "NHN_OCR_SECRET_KEY": "wrong-one"}

    ran = platepipe(
        "--log-json", "run", "--job", "J", str(tmp_path / "archive"), "--db", sqlite_url, env=env
    )

    assert ran.returncode == 1, ran.stdout + ran.stderr
    for line in filter(str.strip, ran.stderr.splitlines()):
        json.loads(line)


# -- status and jobs -------------------------------------------------------------------------


def job_status(env: dict[str, str], job: str) -> dict[str, Any]:
    shown = platepipe("status", "--job", job, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    (doc,) = json.loads(shown.stdout)
    return doc


def test_status_during_and_after_runs_and_jobs_lists_them(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    slow_root, fast_root = tmp_path / "slow", tmp_path / "fast"
    for n in range(30):
        make_image(slow_root / f"s{n:02d}.jpg", 64, 48, "JPEG", seed=n)
    for n in range(4):
        make_image(fast_root / f"f{n}.jpg", 64, 48, "JPEG", seed=100 + n)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}

    slow = start_platepipe(
        "run", "--job", "slow", str(slow_root), "--rate", "4", "--concurrency", "1", env=env
    )
    try:
        while True:  # each status call takes a while by itself: no sleep needed
            assert slow.poll() is None, "the slow run ended before status saw it working"
            shown = platepipe("status", "--job", "slow", "--json", env=env)
            if shown.returncode == 0:
                (during,) = json.loads(shown.stdout)
                if during["counts"]["done"] >= 1:
                    break
        assert during["counts"]["pending"] + during["counts"]["running"] > 0
        assert during["calls_per_s"] > 0
        assert during["eta_s"] is not None and during["eta_s"] > 0
    finally:
        slow.send_signal(signal.SIGINT)
        out, err = slow.communicate(timeout=60)
    assert slow.returncode == 3, out + err

    fast = platepipe("run", "--job", "fast", str(fast_root), *FAST, env=env)
    assert fast.returncode == 0, fast.stdout + fast.stderr

    after = job_status(env, "fast")
    assert after["counts"]["done"] == 4
    assert after["calls"] == 4
    assert after["calls_per_s"] > 0
    assert after["eta_s"] == 0

    listed = platepipe("jobs", env=env)

    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["slow", "fast"]
    assert "30 items" in lines[0] and "pending" in lines[0]
    assert "4 items (done 4)" in lines[1]


# -- exit 4 ----------------------------------------------------------------------------------


def test_a_run_with_a_failed_item_exits_4(tmp_path, sqlite_url, start_emulator, platepipe_env):
    root = tmp_path / "archive"
    make_image(root / "good.jpg", 64, 48, "JPEG", seed=1)
    truncated = root / "truncated.jpg"
    make_image(truncated, 400, 300, "JPEG", seed=2)
    truncated.write_bytes(truncated.read_bytes()[:1500])
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}

    ran = platepipe("run", "--job", "J", str(root), *FAST, env=env)

    assert ran.returncode == 4, ran.stdout + ran.stderr
    assert item_states(sqlite_url) == {
        str(root / "good.jpg"): ("done", 1, None),
        str(truncated): ("failed", 1, "4000002"),
    }
    assert "failed 1" in ran.stdout
