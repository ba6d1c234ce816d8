"""Scratch PostgreSQL databases on the server the tests and benchmarks are given."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

ADMIN_TIMEOUT_S = 10


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy URL (postgresql+asyncpg://...) as asyncpg takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def execute(url: str, statement: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url), timeout=ADMIN_TIMEOUT_S)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def create_database(server_url: str, prefix: str) -> tuple[str, str]:
    """A new, empty database named `prefix` + a random suffix: (its name, its URL)."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    asyncio.run(execute(server_url, f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    return name, url


def drop_database(server_url: str, name: str) -> None:
    asyncio.run(execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
