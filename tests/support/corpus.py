"""A deterministic, realistic on-disk image corpus for the integration tests.

``make_corpus(root)`` writes a tree that looks like a camera archive: nested folders 1-4 levels
deep whose names mix Hangul, Latin letters with diacritics, CJK, spaces and both kinds of quotes;
small JPEG/PNG images under every include-able extension spelling; a few large (>= 1280x720, API
resolution ``normal``) frames; files the pipeline must skip before spending a call; and files or
directories the scanner must not pick up at all.

Every image carries its own seed in a JPEG comment / PNG text chunk, so no two images of one
corpus share a sha256 (``make_corpus`` also checks this). The same ``seed`` gives the same bytes,
the same paths and the same mtimes on every run.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

__all__ = [
    "BAD_DIRS",
    "IMAGE_DIRS",
    "IMAGE_EXTENSIONS",
    "LARGE_SIZES",
    "MAX_UPLOAD_BYTES",
    "TOO_LARGE_SIZE",
    "Corpus",
    "make_corpus",
    "make_image",
    "sha256_file",
]

#: The API rejects requests larger than 5 MB (resultCode 4131000); the pipeline skips such files.
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
#: Exact size of the huge bad file (``undecodable`` when fitted, ``too_large`` with --no-fit):
#: one byte over the limit.
TOO_LARGE_SIZE = MAX_UPLOAD_BYTES + 1

#: Extension spellings used for images, cycled in this order. All match the scanner's default
#: include (``*.jpg *.jpeg *.png``, case-insensitive).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".png", ".jpeg", ".JPG", ".PNG")
_JPEG_EXTENSIONS: tuple[str, ...] = (".jpg", ".JPG", ".jpeg")

#: Sizes of the large frames, cycled; all are >= 1280x720 ("normal" resolution at the API).
LARGE_SIZES: tuple[tuple[int, int], ...] = ((1280, 720), (1920, 1080), (1600, 900), (2048, 1152))

_SMALL_MIN, _SMALL_MAX = 48, 160

#: Folders the images are spread over (round-robin), relative to the corpus root, 1-4 levels.
IMAGE_DIRS: tuple[tuple[str, ...], ...] = (
    ("카메라-01",),
    ("카메라-01", "2024-05-01"),
    ("Zürich", "Bahnhofstraße Nord"),
    ("cam 02", '"night" shift', "it's"),
    ("cam 02", '"night" shift', "it's", "späte Runde"),
    ("camera_03",),
    ("São Paulo", "entrée 1", 'câmera "B"'),
    ("東京 ゲート", "2024"),
)

#: File-name stems, cycled independently of the folders (7 stems x 8 folders: every pairing).
_NAME_TEMPLATES: tuple[str, ...] = (
    "IMG_{i:04d}",
    "frame {i:04d}",
    "차량_{i:04d}",
    'plate "{i:04d}"',
    "o'neil {i:04d}",
    "Straße-{i:04d}",
    "snap_{i:04d}",
)

#: Folders holding the bad files (also where a human would find them: nested, odd names).
BAD_DIRS: dict[str, tuple[str, ...]] = {
    "empty": ("cam 02", '"night" shift'),
    "not_image": ("Zürich",),
    "undecodable": ("카메라-01", "2024-05-01"),
}

#: Directory named like an image; the scanner must not treat it as a file but must recurse into it.
_DIR_NAMED_JPG = ("카메라-01", "folder.jpg")
_INSIDE_NAME = "inside.png"

#: Base mtime for generated files (2024-05-01T22:00:00Z); file k gets base + 37 * k seconds.
_MTIME_BASE = 1_714_600_800
_MTIME_STEP = 37

_JFIF_HEADER = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


@dataclass(frozen=True)
class Corpus:
    """What ``make_corpus`` wrote. All paths are ``root / relative`` (absolute iff root is)."""

    root: Path
    #: Real, valid JPEG/PNG files the API would accept, in generation order.
    images: tuple[Path, ...]
    #: Files the scanner picks up but the pipeline must skip without a call -> expected error_code.
    bad: dict[Path, str]
    #: Files and directories the scanner must not pick up at all.
    ignored: tuple[Path, ...]

    @property
    def scannable(self) -> frozenset[Path]:
        """Every file the scanner's default include must enqueue: images plus bad files."""
        return frozenset(self.images) | frozenset(self.bad)

    @property
    def large_images(self) -> tuple[Path, ...]:
        """Images of at least 1280x720 (reads only the image headers)."""
        out = []
        for path in self.images:
            with Image.open(path) as im:
                if im.width >= 1280 and im.height >= 720:
                    out.append(path)
        return tuple(out)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_image(path: Path, width: int, height: int, fmt: str, *, seed: int) -> None:
    """Write one valid ``fmt`` ("JPEG" or "PNG") image of ``width`` x ``height`` to ``path``.

    Parent folders are created. The bytes depend only on the arguments (and the Pillow build);
    the seed is embedded in the file, so different seeds always give different bytes.
    """
    data = _encode_image(width, height, fmt, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def make_corpus(root: Path, n_images: int = 300, *, seed: int = 0, large_every: int = 50) -> Corpus:
    """Write a corpus of ``n_images`` valid images plus bad and ignored entries under ``root``.

    ``root`` may exist but must be empty. Every ``large_every``-th image (1-based; 0 disables)
    is a JPEG of at least 1280x720 (or a PNG if it falls on ``inside.png``); the rest are 48-160
    px per side. The first image is always ``카메라-01/folder.jpg/inside.png`` when
    ``n_images >= 1``.
    """
    if n_images < 0:
        raise ValueError("n_images must be >= 0")
    if large_every < 0:
        raise ValueError("large_every must be >= 0")
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"corpus root is not empty: {root}")
    root.mkdir(parents=True, exist_ok=True)

    rng = random.Random(seed)
    stamps = _MtimeCounter()
    images: list[Path] = []
    digests: dict[str, Path] = {}

    for i in range(n_images):
        image_seed = _derive_seed(seed, i)
        large = large_every > 0 and (i + 1) % large_every == 0
        if i == 0:
            rel = Path(*_DIR_NAMED_JPG, _INSIDE_NAME)
            fmt = "PNG"
        else:
            folder = IMAGE_DIRS[i % len(IMAGE_DIRS)]
            stem = _NAME_TEMPLATES[i % len(_NAME_TEMPLATES)].format(i=i)
            if large:
                ext = _JPEG_EXTENSIONS[(i // large_every) % len(_JPEG_EXTENSIONS)]
            else:
                ext = IMAGE_EXTENSIONS[i % len(IMAGE_EXTENSIONS)]
            rel = Path(*folder, stem + ext)
            fmt = "PNG" if ext.lower() == ".png" else "JPEG"
        if large:
            width, height = LARGE_SIZES[(i // large_every) % len(LARGE_SIZES)]
        else:
            width = rng.randint(_SMALL_MIN, _SMALL_MAX)
            height = rng.randint(_SMALL_MIN, _SMALL_MAX)

        data = _encode_image(width, height, fmt, seed=image_seed)
        digest = hashlib.sha256(data).hexdigest()
        if digest in digests:  # cannot happen (the seed is in the bytes), but the tests rely on it
            raise RuntimeError(f"duplicate image bytes: {rel} and {digests[digest]}")
        path = root / rel
        digests[digest] = path
        _write(path, data, stamps.next())
        images.append(path)

    bad: dict[Path, str] = {}
    empty = root.joinpath(*BAD_DIRS["empty"], "empty frame.png")
    _write(empty, b"", stamps.next())
    bad[empty] = "empty"

    notes = root.joinpath(*BAD_DIRS["not_image"], "notes.jpg")
    _write(notes, _NOTES_TEXT.encode("utf-8"), stamps.next())
    bad[notes] = "not_image"

    huge = root.joinpath(*BAD_DIRS["undecodable"], "huge 'raw' dump.jpg")
    _write(huge, _JFIF_HEADER + bytes(TOO_LARGE_SIZE - len(_JFIF_HEADER)), stamps.next())
    bad[huge] = "undecodable"  # over 5 MB, so fitted (pipeline/fitting.py): zeros do not decode

    ignored: list[Path] = []
    readme = root / "readme.txt"
    _write(readme, b"Camera archive export. Plates are in the .jpg/.png files.\n", stamps.next())
    ignored.append(readme)

    clip = root.joinpath(*IMAGE_DIRS[2], "clip.mp4")
    _write(clip, b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64), stamps.next())
    ignored.append(clip)

    thumb = root.joinpath("cam 02", "thumb.gif")
    _write(thumb, _encode_gif(seed), stamps.next())
    ignored.append(thumb)

    backup = root.joinpath(*IMAGE_DIRS[6], "snapshot.jpg.bak")
    _write(backup, _encode_image(64, 48, "JPEG", seed=_derive_seed(seed, -1)), stamps.next())
    ignored.append(backup)

    folder_jpg = root.joinpath(*_DIR_NAMED_JPG)
    folder_jpg.mkdir(parents=True, exist_ok=True)
    ignored.append(folder_jpg)

    return Corpus(root=root, images=tuple(images), bad=bad, ignored=tuple(ignored))


# --------------------------------------------------------------------------------------------
# internals

_NOTES_TEXT = (
    "Shift notes, camera 03 (Zürich gate)\n"
    "- lens cleaned 2024-05-01\n"
    "- plate 12가3456 seen twice, check night frames\n"
)


class _MtimeCounter:
    def __init__(self) -> None:
        self._k = 0

    def next(self) -> int:
        t = _MTIME_BASE + _MTIME_STEP * self._k
        self._k += 1
        return t


def _derive_seed(seed: int, index: int) -> int:
    raw = hashlib.sha256(f"platepipe-corpus/{seed}/{index}".encode()).digest()
    return int.from_bytes(raw[:8], "big") >> 1


def _write(path: Path, data: bytes, mtime: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def _encode_image(width: int, height: int, fmt: str, *, seed: int) -> bytes:
    fmt = fmt.upper()
    if fmt not in ("JPEG", "PNG"):
        raise ValueError(f"fmt must be 'JPEG' or 'PNG', not {fmt!r}")
    if width < 1 or height < 1:
        raise ValueError("width and height must be >= 1")
    rng = random.Random(seed)
    marker = f"platepipe test corpus; seed={seed}"

    if width * height > 256 * 256:
        im = _scene(width, height, rng)  # big: flat colours only, cheap to draw and encode
    else:
        style = rng.choice(("noise", "noise", "shapes", "gray"))
        if style == "shapes":
            im = _scene(width, height, rng)
        else:
            mode = "L" if style == "gray" else "RGB"
            n = width * height * (1 if mode == "L" else 3)
            im = Image.frombytes(mode, (width, height), rng.randbytes(n))
            _draw_shapes(ImageDraw.Draw(im), width, height, rng, count=2, gray=mode == "L")
        if fmt == "PNG" and rng.random() < 0.25:
            im = im.convert("RGBA")
            im.putalpha(rng.randint(128, 255))

    buf = io.BytesIO()
    if fmt == "JPEG":
        quality = 60 if width * height > 256 * 256 else rng.randint(70, 92)
        im.save(buf, "JPEG", quality=quality, comment=marker.encode())
    else:
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", marker)
        im.save(buf, "PNG", pnginfo=info, compress_level=1)
    return buf.getvalue()


def _rand_colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def _draw_shapes(
    draw: ImageDraw.ImageDraw,
    width: int,
    height: int,
    rng: random.Random,
    *,
    count: int,
    gray: bool = False,
) -> None:
    for _ in range(count):
        x0, x1 = sorted((rng.randrange(width), rng.randrange(width)))
        y0, y1 = sorted((rng.randrange(height), rng.randrange(height)))
        rgb = _rand_colour(rng)
        colour: tuple[int, int, int] | int = rgb[0] if gray else rgb
        kind = rng.randrange(3)
        if kind == 0:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=max(1, min(width, height) // 24))


def _scene(width: int, height: int, rng: random.Random) -> Image.Image:
    """A flat-colour "car with a plate" picture: cheap at any size."""
    im = Image.new("RGB", (width, height), _rand_colour(rng))
    draw = ImageDraw.Draw(im)
    # road
    draw.rectangle((0, height * 2 // 3, width, height), fill=(60 + rng.randrange(40),) * 3)
    _draw_shapes(draw, width, height, rng, count=3)
    # car body and plate
    cw, ch = width // 2, height // 3
    cx = rng.randrange(0, max(1, width - cw))
    cy = height // 2 - rng.randrange(0, max(1, height // 8))
    draw.rounded_rectangle(
        (cx, cy, cx + cw, cy + ch), radius=max(1, ch // 6), fill=_rand_colour(rng)
    )
    pw, ph = max(8, cw // 3), max(4, ch // 5)
    px, py = cx + (cw - pw) // 2, cy + ch - ph - max(1, ch // 10)
    draw.rectangle((px, py, px + pw, py + ph), fill=(245, 245, 245), outline=(0, 0, 0))
    if ph >= 12:
        text = f"{rng.randrange(10, 100)} {rng.choice('ABDEHJKMNPRSTX')} {rng.randrange(10000):04d}"
        draw.text((px + ph // 4, py + ph // 8), text, fill=(0, 0, 0), font=_font(ph * 3 // 4))
    return im


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # Pillow built without FreeType
        return ImageFont.load_default()


def _encode_gif(seed: int) -> bytes:
    rng = random.Random(seed)
    im = Image.new("P", (16, 16), rng.randrange(256))
    buf = io.BytesIO()
    im.save(buf, "GIF")
    return buf.getvalue()
