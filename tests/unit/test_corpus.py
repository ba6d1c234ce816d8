"""Tests for the integration-test corpus generator (tests/support/corpus.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from tests.support.corpus import (
    TOO_LARGE_SIZE,
    Corpus,
    make_corpus,
    make_image,
    sha256_file,
)

N_IMAGES = 30
LARGE_EVERY = 10
INCLUDE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return make_corpus(
        tmp_path_factory.mktemp("corpus") / "root",
        N_IMAGES,
        seed=7,
        large_every=LARGE_EVERY,
    )


def _tree_bytes(c: Corpus) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(c.root):
        for name in files:
            path = Path(dirpath, name)
            out[path.relative_to(c.root).as_posix()] = path.read_bytes()
    return out


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def _default_scan(root: Path) -> set[Path]:
    """What a scanner with the default include (*.jpg *.jpeg *.png, any case) picks up."""
    found = set()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            if path.suffix.lower() in INCLUDE_SUFFIXES:
                found.add(path)
    return found


def test_counts(corpus: Corpus) -> None:
    assert len(corpus.images) == N_IMAGES
    assert len(set(corpus.images)) == N_IMAGES
    assert sorted(corpus.bad.values()) == ["empty", "not_image", "undecodable"]
    ignored_names = {p.name for p in corpus.ignored}
    assert ignored_names >= {"readme.txt", "clip.mp4", "thumb.gif", "folder.jpg"}
    for path in (*corpus.images, *corpus.bad, *corpus.ignored):
        assert path.is_relative_to(corpus.root)
        assert path.exists()


def test_image_bytes_are_unique(corpus: Corpus) -> None:
    digests = [sha256_file(p) for p in corpus.images]
    assert len(set(digests)) == len(digests)


def test_images_open_with_expected_format(corpus: Corpus) -> None:
    suffixes = set()
    for path in corpus.images:
        suffixes.add(path.suffix)
        expected = "PNG" if path.suffix.lower() == ".png" else "JPEG"
        with Image.open(path) as im:
            assert im.format == expected, path
            im.load()  # fully decodable, not just a valid header
    assert suffixes == {".jpg", ".jpeg", ".JPG", ".png", ".PNG"}


def test_sizes(corpus: Corpus) -> None:
    large = corpus.large_images
    assert len(large) == N_IMAGES // LARGE_EVERY
    assert (1280, 720) in {_size(p) for p in large}
    for path in set(corpus.images) - set(large):
        width, height = _size(path)
        assert 48 <= width <= 160 and 48 <= height <= 160, path
    for path in large:
        assert path.stat().st_size < 5 * 1024 * 1024


def test_awkward_paths(corpus: Corpus) -> None:
    rels = [p.relative_to(corpus.root) for p in corpus.images]
    dir_depths = {len(r.parts) - 1 for r in rels}
    assert min(dir_depths) == 1 and max(dir_depths) == 4
    assert all(1 <= d <= 4 for d in dir_depths)

    dir_parts = [part for r in rels for part in r.parts[:-1]]
    names = [r.name for r in rels]
    for parts in (dir_parts, names):
        assert any(not s.isascii() for s in parts)
        assert any(" " in s for s in parts)
        assert any("'" in s for s in parts)
        assert any('"' in s for s in parts)
    assert "카메라-01" in dir_parts and "Zürich" in dir_parts


def test_bad_files(corpus: Corpus) -> None:
    by_code = {code: path for path, code in corpus.bad.items()}
    for path in corpus.bad:
        assert path.suffix in {".jpg", ".png"}
        assert len(path.relative_to(corpus.root).parts) >= 2  # nested

    assert by_code["empty"].stat().st_size == 0

    notes = by_code["not_image"]
    assert notes.name == "notes.jpg"
    text = notes.read_bytes()
    assert text and text.decode("utf-8")
    assert not text.startswith((b"\xff\xd8\xff", b"\x89PNG"))

    huge = by_code["undecodable"]
    assert huge.stat().st_size == TOO_LARGE_SIZE >= 5 * 1024 * 1024 + 1
    with open(huge, "rb") as fh:
        assert fh.read(4) == b"\xff\xd8\xff\xe0"


def test_ignored(corpus: Corpus) -> None:
    folder = next(p for p in corpus.ignored if p.name == "folder.jpg")
    assert folder.is_dir()
    inside = folder / "inside.png"
    assert inside in corpus.images
    for path in corpus.ignored:
        if path != folder:
            assert path.is_file()
            assert path.suffix.lower() not in INCLUDE_SUFFIXES


def test_default_scan_finds_exactly_images_and_bad(corpus: Corpus) -> None:
    found = _default_scan(corpus.root)
    assert found == corpus.scannable == set(corpus.images) | set(corpus.bad)
    assert not found & set(corpus.ignored)


def test_deterministic(corpus: Corpus, tmp_path: Path) -> None:
    again = make_corpus(tmp_path / "again", N_IMAGES, seed=7, large_every=LARGE_EVERY)
    rel = [p.relative_to(again.root) for p in again.images]
    assert rel == [p.relative_to(corpus.root) for p in corpus.images]
    assert _tree_bytes(again) == _tree_bytes(corpus)
    mtimes = [p.stat().st_mtime for p in again.images]
    assert mtimes == [p.stat().st_mtime for p in corpus.images]


def test_other_seed_gives_other_bytes(corpus: Corpus, tmp_path: Path) -> None:
    other = make_corpus(tmp_path / "other", 5, seed=8, large_every=0)
    assert not {sha256_file(p) for p in other.images} & {sha256_file(p) for p in corpus.images}
    assert other.large_images == ()


def test_root_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    with pytest.raises(FileExistsError):
        make_corpus(tmp_path, 1)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_make_image(tmp_path: Path, fmt: str) -> None:
    a, b, c = tmp_path / "a" / "x.img", tmp_path / "b.img", tmp_path / "c.img"
    make_image(a, 70, 50, fmt, seed=1)
    make_image(b, 70, 50, fmt, seed=1)
    make_image(c, 70, 50, fmt, seed=2)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    with Image.open(a) as im:
        assert (im.format, im.size) == (fmt, (70, 50))
    with pytest.raises(ValueError):
        make_image(tmp_path / "d.gif", 10, 10, "GIF", seed=1)
