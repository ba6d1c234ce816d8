"""Fit: a 10 MB PNG and a 6 MB JPEG over the API's 5 MB, fitted, sent once, boxes mapped back.

Noise makes them big; a marker plate is drawn at a known place, and the emulator, with
`--locate-plates`, answers its box in the pixels of the picture it was sent. Target (issue 13):
each `done` with one call, the stored box within 1 % of the marker in the original's pixels.
The time a fit takes (in this process, as a worker's thread does it) is printed beside.
"""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.fitting import fit_image
from scripts.bench.common import Bench
from scripts.bench.probes import BenchError
from tests.support.db import query
from tests.support.emulator import start_emulator
from tests.support.pictures import Box, noise_jpeg, noise_png

NAME = "fit"
SIZES: tuple[str, ...] = ()
BOX_ERROR_MAX = 0.01  # of the original's side
PICTURES = {"big.png": (noise_png, (4000, 3000)), "big.jpg": (noise_jpeg, (1440, 1080))}


def measure(bench: Bench) -> None:
    m = NAME
    folder = bench.path("big")
    folder.mkdir()
    boxes = {name: make(folder / name) for name, (make, _size) in PICTURES.items()}
    for name in PICTURES:
        data = (folder / name).read_bytes()
        started = time.perf_counter()
        _sent, fit = fit_image(data)
        took = time.perf_counter() - started
        bench.figure(
            m,
            f"fit {name}",
            f"{len(data) / 2**20:.1f} MiB {fit.width}x{fit.height} -> {fit.sent_bytes / 2**20:.1f} "
            f"MiB {fit.sent_width}x{fit.sent_height} at quality {fit.quality} "
            f"(scale {fit.scale:.2f}) in {took:.2f} s",
            took,
        )
    calls, corners = run(bench, folder)
    bench.figure(
        m,
        "calls",
        f"{calls} for {len(PICTURES)} pictures",
        calls,
        target=f"== {len(PICTURES)}",
        passed=calls == len(PICTURES),
    )
    for name, (_make, (width, height)) in PICTURES.items():
        error = box_error(corners.get(name), boxes[name], width, height)
        bench.figure(
            m,
            f"box error {name}",
            f"{error:.2%} of the side (stored {corners.get(name)}, drawn {boxes[name]})",
            error,
            target=f"<= {BOX_ERROR_MAX:.0%}",
            passed=error <= BOX_ERROR_MAX,
        )


def run(bench: Bench, folder: Path) -> tuple[int, dict[str, tuple[int, ...]]]:
    """`platepipe run` over `folder` against an emulator with `--locate-plates`: its calls,
    and the boxes stored by file name."""
    with open(bench.path("emulator-locate.log"), "w") as log:
        try:
            emulator = start_emulator(
                "--locate-plates", "--record", env=bench.env(), cwd=bench.workdir, log=log
            )
        except RuntimeError as exc:
            raise BenchError(str(exc)) from None
    try:
        db_url = bench.sqlite_url("fit")
        args = ["run", "--job", "fit", str(folder), "--db", db_url, "--endpoint", emulator.url]
        finished = bench.platepipe(*args, "--quiet")
        if finished.exit_code != 0:
            raise BenchError(f"run exit {finished.exit_code}: {finished.output[-800:]}")
        calls = int(emulator.stats()["calls"])
    finally:
        emulator.stop()
    rows = query(db_url, "SELECT path, x1, y1, x2, y2, x3, y3, x4, y4 FROM plate_reads")
    return calls, {Path(path).name: tuple(box) for path, *box in rows}


def box_error(stored: tuple[int, ...] | None, drawn: Box, width: int, height: int) -> float:
    """The largest distance of a stored corner from the drawn one, as a share of its side."""
    if stored is None:
        return float("inf")
    left, top, right, bottom = drawn
    expected = (left, top, right, top, right, bottom, left, bottom)
    return max(
        abs(got - want) / (width if index % 2 == 0 else height)
        for index, (got, want) in enumerate(zip(stored, expected, strict=True))
    )
