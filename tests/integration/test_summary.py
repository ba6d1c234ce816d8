"""The final summary breaks transient errors down by code, and when the API refused calls for
its limit, says what rate it seemed to allow."""

from __future__ import annotations

import re
from collections import Counter

from tests.support.cli import platepipe
from tests.support.corpus import make_image
from tests.support.db import query


def test_the_summary_counts_transient_errors_by_code(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    for n in range(40):
        make_image(root / f"x{n:02d}.jpg", 64, 48, "JPEG", seed=n)
    emulator = start_emulator("--fault-rate", "0.3", "--faults", "5000001,http_502", "--seed", "7")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}

    ran = platepipe(
        "run", "--job", "J", str(root), "--rate", "400", "--backoff-base", "0.01",
        "--backoff-cap", "0.05", "--max-attempts", "10", env=env,
    )  # fmt: skip

    assert ran.returncode == 0, ran.stdout + ran.stderr
    expected = Counter(
        dict(
            query(
                sqlite_url,
                "SELECT code, count(*) FROM attempts WHERE code NOT IN ('0', '4000201') "
                "GROUP BY code",
            )
        )
    )
    assert set(expected) == {"5000001", "http_502"}
    found = re.search(r"transient errors \(retried\): (.*)", ran.stdout)
    assert found, ran.stdout
    shown = Counter({c: int(n) for c, n in (part.split() for part in found[1].split(", "))})
    assert shown == expected
    assert "throttled" not in ran.stdout


def test_a_throttled_run_says_what_rate_the_api_allowed(
    tmp_path, sqlite_url, start_emulator, platepipe_env
):
    root = tmp_path / "archive"
    for n in range(120):
        make_image(root / f"x{n:03d}.jpg", 32, 24, "JPEG", seed=n)
    emulator = start_emulator("--rate-limit", "15")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": sqlite_url}

    ran = platepipe("run", "--job", "J", str(root), "--rate", "60", "--concurrency", "8", env=env)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    found = re.search(r"throttled: (\d+) calls refused .* about (\d+) calls/s", ran.stdout)
    assert found, ran.stdout
    assert int(found[1]) == emulator.stats()["calls"] - 120
    assert 8 <= int(found[2]) <= 20, ran.stdout
