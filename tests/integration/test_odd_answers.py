"""Answers that cannot hurt, through `platepipe run`: a poisoned answer is stored clean on both
databases, and a 256 MB body keeps the process small and the item is retried."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support.corpus import make_corpus
from tests.support.db import query

SURROGATE = re.compile(r"[\ud800-\udfff]")
MAX_PEAK_RSS_KB = 200 * 1024

# Run platepipe as a child and report its peak RSS (kB) on the last line of stderr.
PEAK_OF_CHILD = """
import resource, subprocess, sys
code = subprocess.run([sys.executable, "-m", "pipeline", *sys.argv[1:]]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def test_a_poisoned_answer_is_stored_clean(
    tmp_path, db_url, start_odd_server, platepipe_env, secret_key
):
    corpus = make_corpus(tmp_path / "archive", 4, large_every=0)
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": start_odd_server("poison")}

    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--job", "p", str(corpus.root), "--db", db_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    calls = query(db_url, "SELECT count(*) FROM attempts")[0][0]
    assert calls == len(corpus.images)  # each paid for once
    stored = query(
        db_url,
        "SELECT r.raw_response, r.file_type, r.resolution, p.value "
        "FROM recognitions r JOIN plates p ON p.item_id = r.item_id",
    )
    assert len(stored) == len(corpus.images)
    for row in stored:
        for text in row:
            assert secret_key not in text and "\x00" not in text
            assert not SURROGATE.search(text)
    assert {(file_type, resolution) for _, file_type, resolution, _ in stored} == {
        ("jpg", "normal")
    }
    assert all(value.endswith("Authorization: ***") for *_, value in stored)


def test_a_huge_body_keeps_the_process_small_and_the_item_is_retried(
    tmp_path, sqlite_url, start_odd_server, platepipe_env
):
    corpus = make_corpus(tmp_path / "archive", 2, large_every=0)
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": start_odd_server("huge")}

    run = ["run", "--job", "h", str(corpus.root), "--db", sqlite_url, "--max-attempts", "2"]
    run += ["--backoff-base", "0.05"]

    result = subprocess.run(
        [sys.executable, "-c", PEAK_OF_CHILD, *run],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 4, result.stderr  # retried, then failed after --max-attempts
    assert int(result.stderr.splitlines()[-1]) < MAX_PEAK_RSS_KB
    failed = query(sqlite_url, "SELECT error_code, attempts FROM items WHERE status = 'failed'")
    assert failed == [("bad_response", 2)] * len(corpus.images)
