"""Trees of tiny real JPEGs, made in seconds even at a million files."""

from __future__ import annotations

import io
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

FILES_PER_FOLDER = 500
FOLDERS_PER_PARENT = 50


def tiny_jpeg(tag: int | None = None) -> bytes:
    """A real 32x24 JPEG of ~650 bytes; `tag` goes into a comment so every file differs."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (96, 96, 96)).save(buffer, "JPEG", quality=50)
    data = buffer.getvalue()
    return data if tag is None else with_comment(data, tag)


def with_comment(jpeg: bytes, tag: int) -> bytes:
    payload = f"platepipe-bench {tag}".encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


@dataclass
class Tree:
    root: Path
    leaves: list[Path]  # folders of FILES_PER_FOLDER files, in creation order
    files: int
    seconds: float

    def leaves_for(self, count: int) -> list[Path]:
        """The first whole folders holding at least `count` files."""
        return self.leaves[: -(-count // FILES_PER_FOLDER)]


def make_tree(root: Path, count: int, *, distinct: bool) -> Tree:
    """`count` tiny JPEGs in folders of FILES_PER_FOLDER, FOLDERS_PER_PARENT folders a parent.

    `distinct`: every file its own bytes. Otherwise each folder's files are hard links to one
    file (ext4 allows 65,000 links an inode), so a million-file tree is made in seconds.
    """
    started = time.perf_counter()
    template = tiny_jpeg()
    leaves = []
    for start in range(0, count, FILES_PER_FOLDER):
        n = start // FILES_PER_FOLDER
        leaf = root / f"p{n // FOLDERS_PER_PARENT:04d}" / f"d{n:06d}"
        leaf.mkdir(parents=True)
        leaves.append(leaf)
        first = None
        for i in range(start, min(start + FILES_PER_FOLDER, count)):
            path = os.path.join(leaf, f"f{i:07d}.jpg")
            if distinct or first is None:
                with open(path, "wb") as out:
                    out.write(with_comment(template, i) if distinct else template)
                first = path
            else:
                try:
                    os.link(first, path)
                except OSError:  # no hard links here (or too many): a copy will do
                    with open(path, "wb") as out:
                        out.write(template)
    return Tree(root, leaves, count, time.perf_counter() - started)
