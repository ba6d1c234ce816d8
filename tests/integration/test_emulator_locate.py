"""The emulator's `--locate-plates`: the box of the marker drawn in the picture, in the pixels of
the picture sent; still NHN's 5 MB limit. Over a real socket with a real aiohttp client."""

from __future__ import annotations

import io
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from PIL import Image

from pipeline.emulator import MAX_IMAGE_BYTES, emulator_command, start_emulator
from pipeline.emulator.locate import locate_marker
from tests.support.pictures import marker_box, noise_jpeg, small_jpeg

APP_KEY = "test-app-key"
SECRET_KEY = "test-secret-5e1d"


@pytest.fixture
async def post() -> AsyncIterator[Any]:
    runner, url = await start_emulator(
        port=0, app_key=APP_KEY, secret_key=SECRET_KEY, locate_plates=True
    )
    async with aiohttp.ClientSession() as session:

        async def post(data: bytes) -> dict[str, Any]:
            body = aiohttp.FormData()
            body.add_field("image", io.BytesIO(data), filename="upload.jpg")
            endpoint = f"{url}/v1.0/appkeys/{APP_KEY}/vehicle-plate"
            headers = {"Authorization": SECRET_KEY}
            async with session.post(endpoint, data=body, headers=headers) as response:
                return await response.json()

        yield post
    await runner.cleanup()


def corners(box: tuple[int, int, int, int]) -> dict[str, int]:
    left, top, right, bottom = box
    return dict(x1=left, y1=top, x2=right, y2=top, x3=right, y3=bottom, x4=left, y4=bottom)


async def test_the_plate_is_where_the_marker_is(post: Any, tmp_path: Path) -> None:
    png = tmp_path / "marker.png"
    image = Image.new("RGB", (1600, 900), (30, 30, 30))
    box = marker_box(1600, 900)
    image.paste((255, 214, 0), (box[0], box[1], box[2] + 1, box[3] + 1))
    image.save(png)

    answer = await post(png.read_bytes())

    assert answer["header"]["resultCode"] == 0
    assert answer["result"]["boxes"] == [corners(box)]
    assert len(answer["result"]["values"]) == 1
    assert answer["result"]["resolution"] == "normal"  # of the picture sent: 1600x900


async def test_a_jpeg_s_marker_is_found_within_its_artefacts(post: Any, tmp_path: Path) -> None:
    box = small_jpeg(tmp_path / "small.jpg")

    answer = await post((tmp_path / "small.jpg").read_bytes())

    found = answer["result"]["boxes"][0]
    expected = corners(box)
    assert all(abs(found[k] - expected[k]) <= 2 for k in expected), (found, expected)
    assert answer["result"]["resolution"] == "low"  # 640x480


async def test_no_marker_no_plate(post: Any, tmp_path: Path) -> None:
    Image.new("RGB", (320, 240), (40, 90, 140)).save(tmp_path / "plain.png")

    answer = await post((tmp_path / "plain.png").read_bytes())

    assert answer["header"]["resultCode"] == 4000201


async def test_an_upload_over_5_mb_is_still_refused(post: Any, tmp_path: Path) -> None:
    noise_jpeg(tmp_path / "big.jpg")
    data = (tmp_path / "big.jpg").read_bytes()
    assert len(data) > MAX_IMAGE_BYTES

    answer = await post(data)

    assert answer["header"]["resultCode"] == 4131000


def test_noise_alone_shows_no_marker() -> None:
    image = Image.frombytes("RGB", (600, 400), random.Random(0).randbytes(600 * 400 * 3))
    out = io.BytesIO()
    image.save(out, "PNG")

    assert locate_marker(out.getvalue(), "png") is None


def test_the_option_is_in_the_emulator_s_help() -> None:
    result = CliRunner().invoke(emulator_command, ["--help"])

    assert "--locate-plates" in result.output
