"""Shared fixtures: real databases (a SQLite file, a fresh PostgreSQL database per test), the
project's emulator as a real server process, and a way to run `platepipe` as users do."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.support.cli import environment
from tests.support.emulator import Emulator, emulator_argv
from tests.support.emulator import start_emulator as start_emulator_process
from tests.support.postgres import create_database, drop_database, execute

# Tests import these from here.
__all__ = ["APP_KEY", "IN_CI", "POSTGRES_URL_ENV", "Emulator", "emulator_argv"]

POSTGRES_URL_ENV = "PLATEPIPE_TEST_POSTGRES_URL"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
APP_KEY = "test-app-key"


def _postgres_unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        _postgres_unavailable(f"{POSTGRES_URL_ENV} is not set")
    try:
        asyncio.run(execute(url, "SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        _postgres_unavailable(f"cannot reach {POSTGRES_URL_ENV}: {exc}")
    return url


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped after it."""
    name, url = create_database(postgres_server_url, "platepipe_test_")
    try:
        yield url
    finally:
        drop_database(postgres_server_url, name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'plates.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs once on a SQLite file and once on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def secret_key() -> str:
    return f"test-secret-{secrets.token_hex(8)}"


@pytest.fixture
def start_emulator(secret_key: str) -> Iterator[Callable[..., Emulator]]:
    """Start `platepipe emulator` as a real server process; stopped after the test."""
    started: list[Emulator] = []

    def start(*options: str) -> Emulator:
        env = {**os.environ, "NHN_OCR_APP_KEY": APP_KEY, "NHN_OCR_SECRET_KEY": secret_key}
        emulator = start_emulator_process("--record", *options, env=env)
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def platepipe_env(secret_key: str) -> dict[str, str]:
    """The environment a user's cron job would give platepipe (endpoint added per test)."""
    return environment(APP_KEY, secret_key)


@pytest.fixture
def start_odd_server() -> Iterator[Callable[..., str]]:
    """Start tests/support/odd_server.py in a MODE (options such as `--tls CERT KEY` after
    it); its URL. Stopped after the test."""
    started: list[subprocess.Popen[str]] = []

    def start(mode: str, *options: str) -> str:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.odd_server", mode, *options],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        started.append(process)
        return json.loads(process.stdout.readline())["url"]

    yield start
    for process in started:
        process.terminate()
        process.communicate(timeout=10)
