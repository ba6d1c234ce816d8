"""`platepipe export`: one row per plate read, streamed, so memory stays flat on any job."""

from __future__ import annotations

import csv
import json
from contextlib import aclosing
from datetime import datetime
from typing import Any, TextIO

from pipeline.records import Job
from pipeline.store import Store
from pipeline.store.reads import READ_COLUMNS as COLUMNS

FORMATS = ("csv", "jsonl")
BOM = "\ufeff"  # Excel takes a CSV for UTF-8 (Hangul and all) only when it starts with one


def _plain(value: Any) -> Any:
    return value.isoformat(sep=" ") if isinstance(value, datetime) else value


async def export_reads(store: Store, job: Job, fmt: str, out: TextIO) -> int:
    """Write the job's reads to `out` as CSV (with a header) or JSON lines; rows written."""
    rows = 0
    # aclosing: a write that fails (a reader gone, a full disk) ends the database stream here
    # and now, not at some later garbage collection that logs a traceback.
    async with aclosing(store.reads(job)) as reads:
        if fmt == "csv":
            writer = csv.writer(out)
            writer.writerow(COLUMNS)
            async for row in reads:
                writer.writerow([_plain(v) for v in row])
                rows += 1
        else:
            async for row in reads:
                record = dict(zip(COLUMNS, (_plain(v) for v in row), strict=True))
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                rows += 1
    return rows
