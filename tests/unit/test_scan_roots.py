"""Overlapping roots are walked once: what `distinct_roots` keeps, and the capture-pattern
warning and `--min-age` of the walk."""

from __future__ import annotations

import logging
import os
import time

from pipeline.capture import PathPattern
from pipeline.scanner import Filter, ScanStats, distinct_roots, walk

KEEP = Filter(("*.jpg",), ("thumbs",))


def test_nested_and_repeated_roots_are_walked_once(tmp_path):
    (tmp_path / "a" / "cam1").mkdir(parents=True)
    (tmp_path / "a" / "thumbs" / "x").mkdir(parents=True)
    (tmp_path / "a" / "cam1" / "f.jpg").write_bytes(b"x")
    (tmp_path / "a" / "cam1" / "f.txt").write_bytes(b"x")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "link").symlink_to(tmp_path / "a" / "cam1")
    a = str(tmp_path / "a")

    assert distinct_roots([a, f"{a}/cam1", a + "/", str(tmp_path / "b")], KEEP) == [
        a,
        str(tmp_path / "b"),
    ]
    # Reached by no walk of `a`: an excluded folder, a file the globs leave out.
    assert distinct_roots([a, f"{a}/thumbs/x", f"{a}/cam1/f.txt"], KEEP) == [
        a,
        f"{a}/thumbs/x",
        f"{a}/cam1/f.txt",
    ]
    assert distinct_roots([a, f"{a}/cam1/f.jpg"], KEEP) == [a]
    # A symlinked folder is not entered by the walk of its parent: given by name, it is walked.
    assert distinct_roots([str(tmp_path / "b"), str(tmp_path / "b" / "link")], KEEP) == [
        str(tmp_path / "b"),
        str(tmp_path / "b" / "link"),
    ]

    stats = ScanStats()
    found = [f.path for f in walk([a, f"{a}/cam1", a], KEEP, stats)]
    assert found == [f"{a}/cam1/f.jpg"] and stats.files == 1


def test_a_capture_pattern_matching_no_path_warns(tmp_path, caplog):
    (tmp_path / "x.jpg").write_bytes(b"x")
    pattern = PathPattern.parse(r"(?P<camera>cam\d+)")

    with caplog.at_level(logging.WARNING):
        list(walk([str(tmp_path)], KEEP, ScanStats(), pattern))

    assert "matched none of the 1 paths" in caplog.text


def test_min_age_leaves_recent_files(tmp_path):
    for name, age in (("old.jpg", 3600), ("new.jpg", 5)):
        (tmp_path / name).write_bytes(b"x")
        when = time.time() - age
        os.utime(tmp_path / name, (when, when))
    stats = ScanStats()

    found = [os.path.basename(f.path) for f in walk([str(tmp_path)], KEEP, stats, min_age_s=60)]

    assert found == ["old.jpg"] and stats.too_recent == 1 and stats.files == 1
