"""`status` tells the truth: whether a run or workers are live, what the items of a dead run
are, a halted job, `status --check` for monitors, `items` without SQL, and `export -o -`.
Real emulator processes and real databases (`db_url`: SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.support.cli import platepipe, start_platepipe
from tests.support.corpus import make_image

FAST = ("--rate", "400")


def status_json(env: dict[str, str], job: str) -> dict[str, Any]:
    shown = platepipe("status", "--job", job, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    (doc,) = json.loads(shown.stdout)
    return doc


def slow_images(root: Path, n: int = 30) -> None:
    for k in range(n):
        make_image(root / f"s{k:02d}.jpg", 64, 48, "JPEG", seed=k)


def start_slow_run(root: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """A `run` of job J over 30 images at 4 calls/s, one at a time: long enough to watch."""
    slow_images(root)
    return start_platepipe("run", "--job", "J", str(root), "--rate", "4", "--concurrency", "1",
                           env=env)  # fmt: skip


def wait_until_working(env: dict[str, str], job: str, process) -> dict[str, Any]:
    while True:  # each status call takes a while by itself: no sleep needed
        assert process.poll() is None, "the run ended before status saw it working"
        shown = platepipe("status", "--job", job, "--json", env=env)
        if shown.returncode == 0:
            (doc,) = json.loads(shown.stdout)
            if doc["counts"]["done"] >= 1:
                return doc


def test_status_names_the_live_run_then_the_items_a_killed_run_left(
    tmp_path, db_url, start_emulator, platepipe_env
):
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": start_emulator().url, "PLATEPIPE_DB": db_url}
    run = start_slow_run(tmp_path / "archive", env)
    try:
        during = wait_until_working(env, "J", run)
        text = platepipe("status", "--job", "J", env=env).stdout
    finally:
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=60)

    assert during["live"] is True
    (worker,) = during["workers"]
    assert worker["pid"] == run.pid and worker["kind"] == "run"
    assert worker["heartbeat_age_s"] < 10
    assert worker["host"]
    assert during["eta_s"] is not None and during["orphaned"] == 0
    assert f"pid {run.pid} on " in text and "heartbeat" in text and "ETA" in text

    after = status_json(env, "J")
    shown = platepipe("status", "--job", "J", env=env)

    assert after["live"] is False and after["workers"] == []
    assert after["counts"]["running"] > 0  # claimed, never answered: the run was killed
    assert after["orphaned"] == after["counts"]["running"]
    assert after["eta_s"] is None
    assert "ETA" not in shown.stdout and "calls/s" not in shown.stdout
    assert "not running" in shown.stdout
    assert f"{after['orphaned']} of them marked running by a process that is gone" in shown.stdout
    listed = platepipe("jobs", env=env)
    assert listed.stdout.split("\t")[2] == "idle", listed.stdout


def test_status_after_ctrl_c_shows_no_rate_nor_eta(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": start_emulator().url, "PLATEPIPE_DB": sqlite_url}
    run = start_slow_run(tmp_path / "archive", env)
    try:
        wait_until_working(env, "J", run)
    finally:
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=60)
    assert run.returncode == 3

    doc = status_json(env, "J")
    shown = platepipe("status", "--job", "J", env=env)

    assert doc["live"] is False and doc["counts"]["running"] == 0 and doc["orphaned"] == 0
    assert doc["counts"]["pending"] > 0 and doc["eta_s"] is None
    assert "ETA" not in shown.stdout and "calls/s" not in shown.stdout
    assert f"not running: {doc['counts']['pending']} items left" in shown.stdout


def test_a_halted_job_shows_in_status_json_jobs_and_check(
    tmp_path, db_url, start_emulator, platepipe_env
):
    make_image(tmp_path / "archive" / "x.jpg", 64, 48, "JPEG", seed=1)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
    wrong = {**env, "NHN_OCR_SECRET_KEY": "wrong-one"}
    ran = platepipe("run", "--job", "J", str(tmp_path / "archive"), *FAST, env=wrong)
    assert ran.returncode == 1, ran.stdout + ran.stderr

    doc = status_json(env, "J")
    text = platepipe("status", "--job", "J", env=env)
    listed = platepipe("jobs", env=env)
    check = platepipe("status", "--job", "J", "--check", env=env)

    assert doc["halted"] and "4010001" in doc["halted"]
    assert "HALTED" in text.stdout and "4010001" in text.stdout
    assert "HALTED" in listed.stdout
    assert check.returncode == 1 and check.stderr == "", check.stdout + check.stderr

    fixed = platepipe("run", "--job", "J", *FAST, env=env)

    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert status_json(env, "J")["halted"] is None
    assert platepipe("status", "--job", "J", "--check", env=env).returncode == 0


def test_status_check_and_items_name_the_failed_items(
    tmp_path, db_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    good = root / "good.jpg"
    make_image(good, 64, 48, "JPEG", seed=1)
    truncated = root / "truncated.jpg"
    make_image(truncated, 400, 300, "JPEG", seed=2)
    truncated.write_bytes(truncated.read_bytes()[:1500])
    text_file = root / "notes.jpg"
    text_file.write_text("not an image")
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
    ran = platepipe("run", "--job", "J", str(root), *FAST, env=env)
    assert ran.returncode == 4, ran.stdout + ran.stderr

    check = platepipe("status", "--job", "J", "--check", env=env)
    check_json = platepipe("status", "--job", "J", "--check", "--json", env=env)
    failed = platepipe("items", "--job", "J", "--status", "failed", env=env)
    as_json = platepipe("items", "--job", "J", "--json", env=env)
    by_code = platepipe("items", "--job", "J", "--code", "not_image", env=env)
    unknown = platepipe("items", "--job", "nope", env=env)

    assert check.returncode == 4 and "failed 1" in check.stdout and check.stderr == ""
    assert check_json.returncode == 4 and json.loads(check_json.stdout)[0]["counts"]["failed"] == 1
    assert failed.returncode == 0, failed.stderr
    (line,) = failed.stdout.splitlines()
    assert line.split("\t")[:4] == ["failed", "4000002", "1", str(truncated)]
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(r["path"], r["status"], r["error_code"]) for r in records] == sorted(
        [
            (str(good), "done", None),
            (str(text_file), "skipped", "not_image"),
            (str(truncated), "failed", "4000002"),
        ]
    )
    assert all(r["error_message"] for r in records if r["status"] != "done")
    assert [line.split("\t")[3] for line in by_code.stdout.splitlines()] == [str(text_file)]
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr

    truncated.unlink()
    platepipe("retry", "--job", "J", env=env)
    clean = platepipe("run", "--job", "J", *FAST, env=env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert platepipe("status", "--job", "J", "--check", env=env).returncode == 0


def test_export_to_dash_is_stdout_and_bom_leads(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    for n in range(6):
        make_image(root / f"x{n}.jpg", 160, 120, "JPEG", seed=n)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}
    assert platepipe("run", "--job", "J", str(root), *FAST, env=env).returncode == 0
    plain = platepipe("export", "--job", "J", "--format", "csv", env=env)

    dash = platepipe("export", "--job", "J", "--format", "csv", "-o", "-", env=env, cwd=tmp_path)
    with_bom = tmp_path / "excel.csv"
    bom = platepipe(
        "export", "--job", "J", "--format", "csv", "--bom", "-o", str(with_bom), env=env
    )
    bom_out = platepipe("export", "--job", "J", "--format", "csv", "--bom", "-o", "-", env=env)

    assert dash.returncode == 0, dash.stderr
    assert dash.stdout == plain.stdout and dash.stdout.startswith("job,path,")
    assert not (tmp_path / "-").exists()
    assert bom.returncode == 0, bom.stderr
    data = with_bom.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfjob,path,")
    assert data[3:].decode("utf-8").replace("\r\n", "\n") == plain.stdout
    assert bom_out.stdout == "\ufeff" + plain.stdout
