"""Alembic environment: runs on a connection platepipe hands over, or opens its own.

`platepipe` passes its live connection in `config.attributes["connection"]`; by hand, the URL
comes from `-x db=URL`, else `PLATEPIPE_DB`, else the default `sqlite:///platepipe.db`.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from pipeline.config import DEFAULT_DB_URL
from pipeline.db import async_url
from pipeline.schema import metadata

config = context.config


def _configure(**kwargs: object) -> None:
    # Batch mode lets later migrations alter tables on SQLite, which has little ALTER TABLE.
    context.configure(target_metadata=metadata, render_as_batch=True, compare_type=True, **kwargs)


def _run_on(connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    import os

    given = context.get_x_argument(as_dictionary=True).get("db")
    return given or os.environ.get("PLATEPIPE_DB") or DEFAULT_DB_URL


async def _run_own_engine() -> None:
    engine = create_async_engine(async_url(_url()))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run_on)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    _configure(url=async_url(_url()), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (handed := config.attributes.get("connection")) is not None:
    _run_on(handed)
else:
    asyncio.run(_run_own_engine())
