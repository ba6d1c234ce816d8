"""Unit tests of the scanner's globs and directory walk (pipeline/scanner.py), on real tmp trees."""

from __future__ import annotations

import os
from itertools import islice
from pathlib import Path

import pytest

from pipeline import scanner
from pipeline.config import DEFAULT_INCLUDE
from pipeline.records import Found
from pipeline.scanner import Filter, ScanStats, compile_globs, walk

IMAGES = Filter(DEFAULT_INCLUDE)
FIXED_MTIME = 1_600_000_000.0


def _write(path: Path, data: bytes = b"\xff\xd8\xff data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _paths(roots: list[Path], keep: Filter = IMAGES) -> tuple[set[str], ScanStats]:
    stats = ScanStats()
    found = list(walk([str(r) for r in roots], keep, stats))
    paths = [f.path for f in found]
    assert len(paths) == len(set(paths)), "a file was yielded twice"
    return set(paths), stats


# --- compile_globs / Filter -----------------------------------------------------------------


def test_compile_globs_splits_name_and_path_patterns() -> None:
    by_name, by_path = compile_globs(["*.jpg", "cam1/*"])

    assert by_name is not None and by_name.match("a.jpg")
    assert not by_name.match("cam1")
    assert by_path is not None and by_path.match("cam1/a.png")
    assert not by_path.match("a.jpg")


def test_compile_globs_of_nothing_matches_nothing() -> None:
    assert compile_globs([]) == (None, None)
    assert not Filter([]).includes("a.jpg", "a.jpg")


@pytest.mark.parametrize(
    ("name", "included"),
    [
        ("a.jpg", True),
        ("PHOTO.JPG", True),
        ("Photo.Jpg", True),
        ("b.jpeg", True),
        ("B.JPEG", True),
        ("c.png", True),
        ("C.PNG", True),
        ("a.jpg.txt", False),
        ("a.jpgx", False),
        ("notes.txt", False),
        ("jpg", False),
        ("a.gif", False),
    ],
)
def test_default_include_is_case_insensitive_and_anchored(name: str, included: bool) -> None:
    assert IMAGES.includes(name, name) is included


def test_exclude_by_name_wins_over_include() -> None:
    keep = Filter(DEFAULT_INCLUDE, exclude=["thumb_*"])

    assert not keep.includes("thumb_a.jpg", "cam1/thumb_a.jpg")
    assert not keep.includes("THUMB_A.JPG", "cam1/THUMB_A.JPG")
    assert keep.includes("a.jpg", "cam1/a.jpg")


def test_exclude_by_relative_path() -> None:
    keep = Filter(DEFAULT_INCLUDE, exclude=["cam2/*"])

    assert not keep.includes("a.jpg", "cam2/a.jpg")
    assert not keep.includes("a.jpg", "CAM2/a.jpg")
    assert keep.includes("a.jpg", "cam1/a.jpg")
    assert keep.includes("a.jpg", "x/cam2/a.jpg")  # relative to the root, not anywhere
    assert keep.excludes("sub", "cam2/sub")


def test_include_by_relative_path() -> None:
    keep = Filter(["cam1/*.jpg"])

    assert keep.includes("a.jpg", "cam1/a.jpg")
    assert not keep.includes("a.jpg", "cam2/a.jpg")
    assert not keep.includes("a.jpg", "a.jpg")


def test_leading_and_trailing_slashes_of_a_path_glob_are_ignored() -> None:
    keep = Filter(DEFAULT_INCLUDE, exclude=["/cam1/skip/"])

    assert keep.excludes("skip", "cam1/skip")
    assert not keep.excludes("skip", "cam2/skip")


# --- walk -----------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    _write(root / "a.jpg", b"\xff\xd8\xff" + b"a" * 7)
    _write(root / "PHOTO.JPG")
    _write(root / "b.jpeg")
    _write(root / "c.png")
    _write(root / "notes.txt")
    _write(root / "d.gif")
    _write(root / "sub" / "deep" / "deeper" / "e.jpg")
    _write(root / "카메라 1" / "ünï 'q\" s.jpg")
    _write(root / "x.jpg" / "inner.png")  # a directory with an image's name
    return root


def test_walk_finds_images_in_nested_and_oddly_named_folders(tree: Path) -> None:
    paths, stats = _paths([tree])

    assert paths == {
        str(tree / "a.jpg"),
        str(tree / "PHOTO.JPG"),
        str(tree / "b.jpeg"),
        str(tree / "c.png"),
        str(tree / "sub" / "deep" / "deeper" / "e.jpg"),
        str(tree / "카메라 1" / "ünï 'q\" s.jpg"),
        str(tree / "x.jpg" / "inner.png"),
    }
    assert stats.files == len(paths)
    assert stats.unreadable_dirs == 0


def test_walk_yields_absolute_paths_with_size_and_mtime(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.utime(tree / "a.jpg", (FIXED_MTIME, FIXED_MTIME))
    monkeypatch.chdir(tree.parent)

    found = {f.path: (f.size, f.mtime) for f in walk(["root"], IMAGES, ScanStats())}

    assert all(os.path.isabs(path) for path in found)
    assert found[str(tree / "a.jpg")] == (10, FIXED_MTIME)


def test_walk_excluded_folder_is_pruned(tree: Path) -> None:
    paths, _ = _paths([tree], Filter(DEFAULT_INCLUDE, exclude=["deep"]))

    assert not any("/deep/" in p for p in paths)
    assert str(tree / "a.jpg") in paths


def test_walk_exclude_by_relative_path_prunes_only_that_folder(tmp_path: Path) -> None:
    _write(tmp_path / "cam1" / "skip" / "a.jpg")
    _write(tmp_path / "cam2" / "skip" / "b.jpg")

    paths, stats = _paths([tmp_path], Filter(DEFAULT_INCLUDE, exclude=["cam1/skip"]))

    assert paths == {str(tmp_path / "cam2" / "skip" / "b.jpg")}
    assert stats.files == 1


def test_walk_does_not_follow_symlinked_folders(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _write(root / "sub" / "a.jpg")
    os.symlink(root / "sub", root / "linked")
    os.symlink(root / "sub", root / "linked.jpg")  # a folder link with an image's name
    os.symlink(root / "sub", root / "sub" / "loop")  # a folder that contains itself
    os.symlink(root, root / "sub" / "up")
    stats = ScanStats()

    # Bounded, so a walk that does follow the loops fails here instead of running for minutes.
    found = list(islice(walk([str(root)], IMAGES, stats), 10))

    assert [f.path for f in found] == [str(root / "sub" / "a.jpg")]
    assert stats.files == 1


def test_walk_follows_symlinked_files(tmp_path: Path) -> None:
    target = _write(tmp_path / "elsewhere" / "target.bin", b"\xff\xd8\xff" + b"t" * 120)
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(target, root / "link.jpg")

    found = list(walk([str(root)], IMAGES, ScanStats()))

    assert [(f.path, f.size) for f in found] == [(str(root / "link.jpg"), 123)]


def test_walk_yields_broken_and_looping_symlinks_so_their_items_say_why(tmp_path: Path) -> None:
    _write(tmp_path / "ok.jpg")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "broken.jpg")
    os.symlink(tmp_path / "self.jpg", tmp_path / "self.jpg")

    found = {f.path: f for f in walk([str(tmp_path)], IMAGES, ScanStats())}

    assert set(found) == {str(tmp_path / n) for n in ("ok.jpg", "broken.jpg", "self.jpg")}
    assert (found[str(tmp_path / "broken.jpg")].size, found[str(tmp_path / "self.jpg")].size) == (
        0,
        0,
    )


def test_walk_passes_over_fifos(tmp_path: Path) -> None:
    _write(tmp_path / "ok.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")

    paths, _ = _paths([tmp_path])

    assert paths == {str(tmp_path / "ok.jpg")}


def test_walk_keeps_names_that_are_not_utf8_with_their_bytes(tmp_path: Path) -> None:
    _write(tmp_path / "good.jpg")
    raw = os.path.join(os.fsencode(str(tmp_path)), b"bad\xff.jpg")
    fd = os.open(raw, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"\xff\xd8\xff")
    os.close(fd)

    found = {f.path: f for f in walk([str(tmp_path)], IMAGES, ScanStats())}

    shown = str(tmp_path / "bad\\xff.jpg")
    assert set(found) == {str(tmp_path / "good.jpg"), shown}
    assert found[shown].raw_path == raw
    assert found[shown].size == 3
    assert found[str(tmp_path / "good.jpg")].raw_path is None
    shown.encode("utf-8")  # storable as text


def _write_raw(folder: Path, name: bytes, data: bytes = b"\xff\xd8\xff") -> bytes:
    raw = os.path.join(os.fsencode(str(folder)), name)
    fd = os.open(raw, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, data)
    os.close(fd)
    return raw


def test_a_name_with_an_odd_byte_and_one_with_its_escape_s_text_are_two_items(
    tmp_path: Path,
) -> None:
    odd = _write_raw(tmp_path, b"c19\xff.jpg")
    literal = _write_raw(tmp_path, b"c19\\xff.jpg", b"\xff\xd8\xff other")

    found = {f.path: f for f in walk([str(tmp_path)], IMAGES, ScanStats())}

    assert found.keys() == {str(tmp_path / "c19\\xff.jpg"), str(tmp_path / "c19\\\\xff.jpg")}
    assert found[str(tmp_path / "c19\\xff.jpg")].raw_path == odd
    assert found[str(tmp_path / "c19\\\\xff.jpg")].raw_path == literal


@pytest.mark.parametrize(
    "name",
    ["plain.jpg", "C:\\cams\\x1\\a.jpg", "back\\slash.jpg", "\\xZZ.jpg", "\\x7f.jpg", "\\XFF.jpg"],
)
def test_utf8_names_are_shown_as_they_are(tmp_path: Path, name: str) -> None:
    _write(tmp_path / name)

    (found,) = walk([str(tmp_path)], IMAGES, ScanStats())

    assert (found.path, found.raw_path) == (str(tmp_path / name), None)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        (b"a\\b\xff.jpg", "a\\\\b\\xff.jpg"),  # a backslash beside an odd byte: doubled
        (b"\\xe9.jpg", "\\\\xe9.jpg"),  # the text of an escape, literally
        (b"caf\xc3\xa9 \\x80 \xe9.jpg", "caf\u00e9 \\\\x80 \\xe9.jpg"),
    ],
)
def test_escaped_names_read_back_to_their_bytes(tmp_path: Path, name: bytes, shown: str) -> None:
    raw = _write_raw(tmp_path, name)

    (found,) = walk([str(tmp_path)], IMAGES, ScanStats())

    assert (found.path, found.raw_path) == (str(tmp_path / shown), raw)
    found.path.encode("utf-8")  # storable as text
    assert _unescape(found.path) == raw


def _unescape(shown: str) -> bytes:
    """The reverse of the scanner's escaping: `\\\\` is a backslash, `\\xNN` a byte."""
    out, i = bytearray(), 0
    while i < len(shown):
        if shown.startswith("\\\\", i):
            out += b"\\"
            i += 2
        elif shown.startswith("\\x", i):
            out.append(int(shown[i + 2 : i + 4], 16))
            i += 4
        else:
            out += shown[i].encode("utf-8")
            i += 1
    return bytes(out)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can list a chmod 000 folder")
def test_walk_counts_unreadable_folders_and_goes_on(tmp_path: Path) -> None:
    _write(tmp_path / "ok" / "a.jpg")
    locked = tmp_path / "locked"
    _write(locked / "b.jpg")
    locked.chmod(0)
    try:
        paths, stats = _paths([tmp_path])
    finally:
        locked.chmod(0o755)

    assert paths == {str(tmp_path / "ok" / "a.jpg")}
    assert stats.unreadable_dirs == 1


def test_walk_counts_a_folder_it_cannot_list_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The chmod test above is skipped as root; this one refuses the listing the same way.
    _write(tmp_path / "ok" / "a.jpg")
    _write(tmp_path / "locked" / "b.jpg")
    real_scandir = os.scandir

    def scandir(path: str):  # type: ignore[no-untyped-def]
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(scanner.os, "scandir", scandir)

    paths, stats = _paths([tmp_path])

    assert paths == {str(tmp_path / "ok" / "a.jpg")}
    assert stats.unreadable_dirs == 1
    assert stats.files == 1


def test_walk_of_a_single_file_root_yields_that_file(tmp_path: Path) -> None:
    image = _write(tmp_path / "one.jpg", b"\xff\xd8\xff12345")
    os.utime(image, (FIXED_MTIME, FIXED_MTIME))
    stats = ScanStats()

    found = list(walk([str(image)], IMAGES, stats))

    assert found == [Found(str(image), 8, FIXED_MTIME)]
    assert stats.files == 1


def test_walk_goes_through_every_root(tmp_path: Path) -> None:
    first = _write(tmp_path / "r1" / "a.jpg")
    second = _write(tmp_path / "r2" / "sub" / "b.png")

    paths, stats = _paths([tmp_path / "r1", tmp_path / "r2"])

    assert paths == {str(first), str(second)}
    assert stats.files == 2


def test_walk_is_lazy(tmp_path: Path) -> None:
    # The scanner streams: taking one file must not stat the whole tree first.
    for i in range(5):
        _write(tmp_path / f"d{i}" / "a.jpg")
    stats = ScanStats()

    files = walk([str(tmp_path)], IMAGES, stats)
    next(files)

    assert stats.files == 1
