"""Shared fixtures: real databases (a SQLite file, a fresh PostgreSQL database per test), the
project's emulator as a real server process, and a way to run `platepipe` as users do."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

POSTGRES_URL_ENV = "PLATEPIPE_TEST_POSTGRES_URL"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
APP_KEY = "test-app-key"
EMULATOR_START_TIMEOUT_S = 20


def _postgres_unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(reason)


async def _postgres_admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        _postgres_unavailable(f"{POSTGRES_URL_ENV} is not set")
    try:
        asyncio.run(_postgres_admin(url, "SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        _postgres_unavailable(f"cannot reach {POSTGRES_URL_ENV}: {exc}")
    return url


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped after it."""
    name = f"platepipe_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_postgres_admin(postgres_server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(
            _postgres_admin(postgres_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        )


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


@dataclass
class Emulator:
    url: str
    process: subprocess.Popen[str]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_emulator/stats", timeout=10) as response:
            return json.load(response)


@pytest.fixture
def start_emulator(secret_key: str) -> Iterator[Callable[..., Emulator]]:
    """Start `platepipe emulator` as a real server process; stopped after the test."""
    started: list[Emulator] = []

    def start(*options: str) -> Emulator:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "emulator", "--port", "0", "--record", *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "NHN_OCR_APP_KEY": APP_KEY, "NHN_OCR_SECRET_KEY": secret_key},
        )
        line = process.stdout.readline() if process.stdout else ""
        if "listening on" not in line:
            process.kill()
            raise RuntimeError(f"emulator did not start: {line!r} {process.stderr.read()!r}")
        emulator = Emulator(line.rsplit(" ", 1)[-1].strip(), process)
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.process.terminate()
        try:
            emulator.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            emulator.process.kill()
            emulator.process.communicate()


@pytest.fixture
def platepipe_env(secret_key: str) -> dict[str, str]:
    """The environment a user's cron job would give platepipe (endpoint added per test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NHN_OCR_", "PLATEPIPE_"))}
    return {**env, "NHN_OCR_APP_KEY": APP_KEY, "NHN_OCR_SECRET_KEY": secret_key}


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
