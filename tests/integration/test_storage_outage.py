"""The database is part of the bill: while results cannot be written (a full disk, a database
gone), no new call starts; answers already paid for wait in memory and are written when it comes
back; if it does not come back in time the run stops with exit 1, nothing `failed` for it."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import IN_CI
from tests.support.cli import platepipe, start_platepipe
from tests.support.corpus import make_corpus
from tests.support.db import query
from tests.support.tcp_proxy import proxied

CONCURRENCY = 4


def statuses(db_url: str) -> dict[str, int]:
    return dict(query(db_url, "SELECT status, count(*) FROM items GROUP BY status"))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB filesystem of its own (tmpfs), to fill up."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs: {mounted.stderr.strip()}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(disk: Path) -> Path:
    """Fill `disk` to the last byte; the filler file, to delete for the space to come back."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        chunk = b"\0" * 65536
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        for size in (4096, 512, 1):  # the last scraps
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return filler


def _wait_for_calls(emulator, count: int, run: subprocess.Popen, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while (calls := emulator.stats()["calls"]) < count:
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, f"only {calls} calls"
        time.sleep(0.05)
    return calls


def test_a_full_disk_holds_the_calls_and_loses_no_answer(
    tmp_path, small_disk, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 80, large_every=0)
    db_url = f"sqlite:///{small_disk / 'plates.db'}"
    emulator = start_emulator("--latency", "0.02-0.04")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url}
    run = start_platepipe(
        "run", "--job", "full", str(corpus.root), "--db", db_url, "--rate", "20",
        "--concurrency", str(CONCURRENCY), "--max-db-outage", "120", env=env,
    )  # fmt: skip
    _wait_for_calls(emulator, 15, run)
    filler = _fill(small_disk)
    time.sleep(4)  # the writer meets the full disk: the calls stop
    held_from = emulator.stats()["calls"]
    time.sleep(2)
    held_to = emulator.stats()["calls"]
    os.unlink(filler)  # space again
    _out, err = run.communicate(timeout=120)

    assert held_to == held_from, "calls went on while nothing could be written"
    assert run.returncode == 0, err
    assert statuses(db_url) == {"done": len(corpus.images), "skipped": len(corpus.bad)}
    assert emulator.stats()["calls"] == len(corpus.images)  # each paid for once
    assert "full" in err  # the operator is told why it waited


@pytest.mark.postgres
def test_postgres_gone_for_good_stops_the_calls_and_the_run_with_exit_1(
    tmp_path, postgres_url, start_emulator, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 120, large_every=0)
    emulator = start_emulator("--latency", "0.02-0.04")
    real = make_url(postgres_url)
    with proxied(real.host or "127.0.0.1", real.port or 5432) as proxy:
        db_url = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}
        args = ("run", "--job", "gone", "--rate", "20", "--concurrency", str(CONCURRENCY))
        run = start_platepipe(*args, str(corpus.root), "--max-db-outage", "4", env=env)
        _wait_for_calls(emulator, 15, run)
        proxy.cut()  # for good
        cut_at_calls = emulator.stats()["calls"]
        started = time.monotonic()
        _out, err = run.communicate(timeout=60)
        stopped_after_s = time.monotonic() - started
        calls_while_gone = emulator.stats()["calls"] - cut_at_calls

        assert run.returncode == 1, err
        assert stopped_after_s < 30
        assert "Traceback" not in err
        assert calls_while_gone <= CONCURRENCY, "calls started while nothing could be written"

        proxy.restore()
        rerun = platepipe(*args, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert statuses(postgres_url) == {"done": len(corpus.images), "skipped": len(corpus.bad)}
    assert "failed" not in statuses(postgres_url)
    # Paid twice at most: the answers held in memory when the run had to stop.
    assert emulator.stats()["calls"] <= len(corpus.images) + CONCURRENCY
