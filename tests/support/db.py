"""Read a test database back with plain SQL, as a user with sqlite3 or psql would."""

from __future__ import annotations

import asyncio
from typing import Any

from pipeline.store import Store


def query(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    async def run() -> list[tuple[Any, ...]]:
        async with Store.connect(url, migrate=False) as store:
            return await store.query(sql, **params)

    return asyncio.run(run())
