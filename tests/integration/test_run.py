"""`platepipe run` end to end, as a user runs it: a real tree of images, the emulator as a real
server, a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tests.support.cli import platepipe
from tests.support.corpus import make_corpus, sha256_file
from tests.support.db import query
from tests.support.reads import assert_reads_match

N_IMAGES = 240


@pytest.fixture
def corpus(tmp_path: Path):
    corpus = make_corpus(tmp_path / "archive", N_IMAGES, large_every=40)
    # A noisy frame of a few MB, as real cameras write: uploads past 1 MiB take another path.
    heavy = corpus.root / "cam 02" / "heavy frame.png"
    make_noise_png(heavy, 1400, 900)
    assert 1024 * 1024 < heavy.stat().st_size < 5 * 1024 * 1024
    return dataclasses.replace(corpus, images=(*corpus.images, heavy))


def make_noise_png(path: Path, width: int, height: int) -> None:
    Image.frombytes("RGB", (width, height), random.Random(3).randbytes(width * height * 3)).save(
        path
    )


def test_run_stores_every_read_once_and_a_rerun_calls_nothing(
    corpus, db_url, start_emulator, platepipe_env
):
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}

    first = platepipe("run", "--job", "night-1", str(corpus.root), "--rate", "400", env=env)

    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    stats = emulator.stats()
    # Exactly one call per image, none for the files the API would reject.
    assert stats["calls"] == len(corpus.images)
    assert stats["by_sha256"] == {sha256_file(p): 1 for p in corpus.images}
    statuses = dict(query(db_url, "SELECT path, status FROM items"))
    assert statuses == {str(p): "done" for p in corpus.images} | {
        str(p): "skipped" for p in corpus.bad
    }
    codes = dict(query(db_url, "SELECT path, error_code FROM items WHERE status = 'skipped'"))
    assert codes == {str(p): code for p, code in corpus.bad.items()}
    assert_reads_match(db_url, "night-1", corpus.images, stats["answers"])
    # Every done item has exactly one recognition, with its resolution and file type.
    (recognitions,) = query(db_url, "SELECT count(*) FROM recognitions")[0]
    assert recognitions == len(corpus.images)
    assert f"done {len(corpus.images)}" in first.stdout

    again = platepipe("run", "--job", "night-1", str(corpus.root), env=env)

    assert again.returncode == 0, again.stderr
    assert emulator.stats()["calls"] == len(corpus.images)
    resumed = platepipe("run", "--job", "night-1", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert emulator.stats()["calls"] == len(corpus.images)


def test_resolution_and_file_type_follow_the_image(
    corpus, sqlite_url, start_emulator, platepipe_env
):
    # A plate on every image: a 4000201 answer carries no fileType nor resolution.
    emulator = start_emulator("--no-plate-share", "0")
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url}

    done = platepipe(
        "run", "--job", "j", str(corpus.root), "--db", sqlite_url, "--rate", "400", env=env
    )

    assert done.returncode == 0, done.stderr
    rows = query(
        sqlite_url,
        "SELECT i.path, r.resolution, r.file_type FROM recognitions r "
        "JOIN items i ON i.id = r.item_id",
    )
    large = {str(p) for p in corpus.large_images}
    assert large
    for path, resolution, file_type in rows:
        assert resolution == ("normal" if path in large else "low"), path
        with open(path, "rb") as f:
            assert file_type == ("png" if f.read(4) == b"\x89PNG" else "jpg"), path


def test_include_and_exclude_choose_the_files(tmp_path, sqlite_url, start_emulator, platepipe_env):
    corpus = make_corpus(tmp_path / "archive", 30, large_every=0)
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url}

    done = platepipe(
        "run",
        "--job",
        "pngs",
        str(corpus.root),
        "--db",
        sqlite_url,
        "--include",
        "*.png",
        "--exclude",
        "Zürich",
        env=env,
    )

    assert done.returncode == 0, done.stderr
    paths = {Path(p) for (p,) in query(sqlite_url, "SELECT path FROM items")}
    wanted = {
        p
        for p in corpus.scannable
        if p.suffix.lower() == ".png" and "Zürich" not in p.relative_to(corpus.root).parts
    }
    assert paths == wanted
    assert Counter(p.suffix for p in paths).keys() <= {".png", ".PNG"}
