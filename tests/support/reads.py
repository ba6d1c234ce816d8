"""Compare what the database holds with what the emulator answered, file by file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.corpus import sha256_file
from tests.support.db import query

BOX_KEYS = ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4")


def expected_reads(images: tuple[Path, ...], answers: dict[str, Any]) -> dict[str, list[tuple]]:
    """path -> [(value, conf, x1..y4, resolution, file_type)] as the emulator answered them.

    ``answers`` is the emulator's stats: each image's own answer, its plates or 4000201 (no
    ``result``), which gives the image no read. An image the emulator never answered is a KeyError.
    """
    expected = {}
    for path in images:
        result = answers[sha256_file(path)].get("result")
        if result is None:  # 4000201: no plate, no row in plate_reads
            expected[str(path)] = []
            continue
        expected[str(path)] = [
            (
                value["value"],
                value["conf"],
                *(box[k] for k in BOX_KEYS),
                result["resolution"],
                result["fileType"],
            )
            for value, box in zip(result["values"], result["boxes"], strict=True)
        ]
    return expected


def stored_reads(db_url: str, job: str) -> dict[str, list[tuple]]:
    rows = query(
        db_url,
        "SELECT path, value, conf, x1, y1, x2, y2, x3, y3, x4, y4, resolution, file_type "
        "FROM plate_reads WHERE job = :job ORDER BY path, x1, y1, value",
        job=job,
    )
    stored: dict[str, list[tuple]] = {}
    for path, *read in rows:
        stored.setdefault(path, []).append(tuple(read))
    return stored


def assert_reads_match(db_url: str, job: str, images: tuple[Path, ...], answers: dict) -> None:
    expected = {p: sorted(r, key=_order) for p, r in expected_reads(images, answers).items() if r}
    stored = {p: sorted(r, key=_order) for p, r in stored_reads(db_url, job).items()}
    assert stored.keys() == expected.keys()
    for path, reads in expected.items():
        assert stored[path] == reads, path


def _order(read: tuple) -> tuple:
    return (read[2], read[3], read[0])
