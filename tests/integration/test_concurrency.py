"""`--concurrency auto` (the default) keeps as many calls in flight as the rate needs at the
API's latency: past a fixed 16 on a slow API, a handful on a fast one, never past
--max-concurrency; a number pins it; progress and `status` show it. Real emulator processes
(whose stats count the calls in flight), real databases (`db_url`: SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from pipeline.concurrency import target_limit
from tests.support.cli import platepipe, start_platepipe
from tests.support.corpus import make_image
from tests.support.db import query

OLD_FIXED_DEFAULT = 16  # what `--concurrency` was when not given


def images(root: Path, n: int) -> Path:
    for k in range(n):
        make_image(root / f"d{k // 100}" / f"i{k:04d}.jpg", 32, 24, "JPEG", seed=k)
    return root


def done(db_url: str) -> int:
    return query(db_url, "SELECT count(*) FROM items WHERE status = 'done'")[0][0]


def test_auto_grows_past_the_old_fixed_default_on_a_slow_api(
    tmp_path, db_url, start_emulator, platepipe_env
):
    # 60 calls/s at 0.4-0.6 s need ~30 in flight: a fixed 16 could not get there.
    rate, slowest_s = 60, 0.6
    root = images(tmp_path / "archive", 240)
    emulator = start_emulator("--latency", f"0.4-{slowest_s}")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}

    ran = platepipe("run", "--job", "J", str(root), "--rate", str(rate), env=env, timeout=180)

    assert ran.returncode == 0, ran.stderr
    assert done(db_url) == 240
    peak = emulator.stats()["max_in_flight"]
    assert peak > OLD_FIXED_DEFAULT, peak
    # never more than the rate needs, even measured twice as slow (a loaded machine)
    assert peak <= target_limit(rate, 2 * slowest_s, 256), peak


def status_json(env: dict[str, str]) -> dict[str, Any]:
    shown = platepipe("status", "--job", "J", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    (doc,) = json.loads(shown.stdout)
    return doc


def test_a_fast_api_sees_few_calls_in_flight_and_status_shows_the_concurrency_and_latency(
    tmp_path, db_url, start_emulator, platepipe_env
):
    # 40 calls/s at 20 ms need about one call in flight. The run is stopped once status has
    # been seen showing it a few times, however slow a loaded machine makes that.
    rate, latency_s = 40, 0.02
    root = images(tmp_path / "archive", 1000)
    emulator = start_emulator("--latency", f"{latency_s}-{latency_s}")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
    assert platepipe("scan", "--job", "J", str(root), env=env).returncode == 0  # status sees J
    run = start_platepipe("run", "--job", "J", "--rate", str(rate), "--progress-every", "0.5",
                          env=env)  # fmt: skip
    held, measured, text = [], [], ""
    try:
        while len(measured) < 3 or "latency p90" not in text:
            assert run.poll() is None, "the run ended before status was seen"
            workers = status_json(env)["workers"]  # each call takes a while: no sleep needed
            held += [w["items_held"] for w in workers]
            measured += [w for w in workers if w["latency_ms"] is not None]
            if "latency p90" not in text:
                text = platepipe("status", "--job", "J", env=env).stdout
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()

    assert run.returncode == 3, err  # stopped early, items pending
    # generous: ten times what 2 × rate × latency allows, for a loaded machine's latency
    assert emulator.stats()["max_in_flight"] <= 10 * 2 * rate * latency_s
    for worker in measured:
        assert 1 <= worker["concurrency"] <= 8 and worker["latency_ms"] >= latency_s * 1000
    assert re.search(r"live: `run` pid \d+ .*, concurrency \d+, latency p90 \d+ ms", text), text
    # what the worker holds (leased, queued, read ahead) follows the limit: a pool of 16
    # held ~60, one of every --max-concurrency worker hundreds
    assert max(held) <= 24, (held, measured)
    progress = [line for line in err.splitlines() if " calls, " in line]
    assert any("concurrency " in line and "latency p90 " in line for line in progress), err


def test_a_number_pins_the_calls_in_flight(tmp_path, db_url, start_emulator, platepipe_env):
    root = images(tmp_path / "archive", 60)
    emulator = start_emulator("--latency", "0.2-0.3")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}

    ran = platepipe("run", "--job", "J", str(root), "--rate", "60", "--concurrency", "3", env=env)

    assert ran.returncode == 0, ran.stderr
    assert done(db_url) == 60
    assert emulator.stats()["max_in_flight"] <= 3


def test_max_concurrency_caps_auto(tmp_path, db_url, start_emulator, platepipe_env):
    root = images(tmp_path / "archive", 60)
    emulator = start_emulator("--latency", "0.3-0.5")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}

    ran = platepipe(
        "run", "--job", "J", str(root), "--rate", "60", "--max-concurrency", "5", env=env
    )

    assert ran.returncode == 0, ran.stderr
    assert done(db_url) == 60
    assert emulator.stats()["max_in_flight"] <= 5


@pytest.mark.parametrize(
    ("option", "value"),
    [("--concurrency", "abc"), ("--concurrency", "0"), ("--concurrency", "-3"),
     ("--max-concurrency", "0"), ("--max-concurrency", "many")],
)  # fmt: skip
def test_a_concurrency_that_is_not_auto_or_a_number_is_a_usage_error(
    tmp_path, sqlite_url, platepipe_env, option, value
):
    env = {**platepipe_env, "PLATEPIPE_DB": sqlite_url}

    ran = platepipe("run", "--job", "J", str(tmp_path), option, value, env=env)

    assert ran.returncode == 2, ran.stderr
    assert "Traceback" not in ran.stderr and option in ran.stderr
    assert not (tmp_path / "plates.db").exists()
