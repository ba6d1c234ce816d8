"""The NHN-compatible emulator, over a real socket with a real aiohttp client."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from PIL import Image

from pipeline.emulator import (
    MAX_IMAGE_BYTES,
    PLATE_SYLLABLES,
    STATS_KEY,
    EmulatorStats,
    emulator_command,
    start_emulator,
    synthetic_result,
)

APP_KEY = "test-app-key"
SECRET_KEY = "test-secret-9f2c41"
PLATE_RE = re.compile(r"^\d{2,3}[가-힣]\d{4}$")
SUBPROCESS_TIMEOUT_SECONDS = 10.0

Post = Callable[..., Awaitable[dict[str, Any]]]
StartEmulator = Callable[..., Awaitable[tuple[str, EmulatorStats]]]


@pytest.fixture
async def emulator_factory() -> AsyncIterator[StartEmulator]:
    """Start emulators on free ports; every one is cleaned up after the test."""
    runners = []

    async def start(**options: Any) -> tuple[str, EmulatorStats]:
        options = {"app_key": APP_KEY, "secret_key": SECRET_KEY, "record": True} | options
        runner, url = await start_emulator(port=0, **options)
        runners.append(runner)
        return url, runner.app[STATS_KEY]

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def emulator(emulator_factory: StartEmulator) -> tuple[str, EmulatorStats]:
    return await emulator_factory()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def post(emulator: tuple[str, EmulatorStats], session: aiohttp.ClientSession) -> Post:
    url, _ = emulator

    async def post(
        data: bytes | None,
        *,
        field: str = "image",
        app_key: str = APP_KEY,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> dict[str, Any]:
        if body is None:
            body = aiohttp.FormData()
            body.add_field(field, io.BytesIO(data or b""), filename="upload.bin")
        if headers is None:
            headers = {"Authorization": SECRET_KEY}
        endpoint = f"{url}/v1.0/appkeys/{app_key}/vehicle-plate"
        async with session.post(endpoint, data=body, headers=headers) as response:
            assert response.status == 200  # NHN answers every outcome with HTTP 200
            text = await response.text()
            assert SECRET_KEY not in text
            return await response.json()

    return post


def encode_image(path: Path, size: tuple[int, int], fmt: str, red: int = 0) -> bytes:
    Image.new("RGB", size, (red, 90, 160)).save(path, fmt)
    return path.read_bytes()


@pytest.fixture
def jpeg_hd(tmp_path: Path) -> bytes:
    """A 1280x720 JPEG whose synthetic answer has at least one plate."""
    for red in range(256):
        data = encode_image(tmp_path / "hd.jpg", (1280, 720), "JPEG", red)
        if synthetic_result(data, 1280, 720, "jpg")["values"]:
            return data
    raise AssertionError("no JPEG variant with plates")


@pytest.fixture
def png_small(tmp_path: Path) -> bytes:
    return encode_image(tmp_path / "small.png", (320, 240), "PNG")


def code(answer: dict[str, Any]) -> int:
    return answer["header"]["resultCode"]


def test_synthetic_results_look_like_plates_inside_the_image() -> None:
    rng = random.Random(7)
    counts = [0] * 4
    for _ in range(2000):
        data = rng.randbytes(rng.randrange(1, 64))
        width, height = rng.randrange(1, 4000), rng.randrange(1, 4000)
        result = synthetic_result(data, width, height, "png")
        assert result == synthetic_result(data, width, height, "png")
        assert len(result["values"]) == len(result["boxes"])
        counts[len(result["values"])] += 1
        for value in result["values"]:
            assert PLATE_RE.match(value["value"]), value
            assert re.sub(r"\d", "", value["value"]) in PLATE_SYLLABLES
            assert 0.30 <= value["conf"] <= 0.99
            assert round(value["conf"], 4) == value["conf"]
        for box in result["boxes"]:
            assert all(isinstance(v, int) for v in box.values())
            for corner in (1, 2, 3, 4):
                assert 0 <= box[f"x{corner}"] < width and 0 <= box[f"y{corner}"] < height
            assert box["x1"] == box["x4"] <= box["x2"] == box["x3"]
            assert box["y1"] <= box["y4"] and box["y2"] <= box["y3"]
    assert all(350 < n < 650 for n in counts), counts  # about a quarter each, none included


@pytest.mark.parametrize(
    ("size", "resolution"),
    [((1280, 720), "normal"), ((720, 1280), "normal"), ((1279, 720), "low"), ((4000, 719), "low")],
)
def test_resolution_follows_hd_threshold(size: tuple[int, int], resolution: str) -> None:
    assert synthetic_result(b"x", *size, "jpg")["resolution"] == resolution


async def test_success_is_deterministic_and_matches_synthetic_result(
    post: Post, jpeg_hd: bytes, png_small: bytes
) -> None:
    first = await post(jpeg_hd)
    assert first["header"] == {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"}
    assert first["result"] == synthetic_result(jpeg_hd, 1280, 720, "jpg")
    assert first["result"]["resolution"] == "normal"
    assert len(first["result"]["values"]) == len(first["result"]["boxes"]) >= 1
    assert await post(jpeg_hd) == first

    small = await post(png_small)
    assert small["result"] == synthetic_result(png_small, 320, 240, "png")
    assert small["result"]["fileType"] == "png"
    assert small["result"]["resolution"] == "low"


@pytest.mark.parametrize(
    ("app_key", "headers", "expected"),
    [
        (APP_KEY, {"Authorization": "wrong-secret"}, 4010001),
        ("wrong-app-key", {"Authorization": SECRET_KEY}, 4010001),
        (APP_KEY, {}, 4000005),
        ("wrong-app-key", {}, 4000005),  # the missing header is reported first
    ],
)
async def test_credentials(
    post: Post, png_small: bytes, app_key: str, headers: dict[str, str], expected: int
) -> None:
    answer = await post(png_small, app_key=app_key, headers=headers)
    assert answer["header"]["isSuccessful"] is False
    assert code(answer) == expected
    assert answer.get("result") is None


async def test_credentials_are_checked_before_size(post: Post) -> None:
    too_big = b"\xff\xd8\xff" + bytes(MAX_IMAGE_BYTES)
    assert code(await post(too_big, headers={"Authorization": "wrong"})) == 4010001


async def test_missing_field_and_non_multipart_are_invalid_parameters(
    post: Post, png_small: bytes
) -> None:
    assert code(await post(png_small, field="file")) == 4000001
    assert code(await post(None, body=png_small)) == 4000001


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 4000004),
        (b"plate list\n12\xea\xb0\x803456\n", 4000003),
        (b"GIF89a" + bytes(100), 4000003),
        (b"\xff\xd8\xff" + b"this is not a jpeg at all" * 10, 4000002),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", 4000002),  # truncated header
    ],
    ids=["empty", "text", "gif", "garbage-after-jpeg-magic", "truncated-png"],
)
async def test_rejected_files(post: Post, data: bytes, expected: int) -> None:
    assert code(await post(data)) == expected


async def test_header_beyond_the_first_64_kib_is_still_read(post: Post, tmp_path: Path) -> None:
    path = tmp_path / "icc.jpg"
    Image.new("RGB", (640, 480)).save(path, "JPEG", icc_profile=bytes(200_000))
    data = path.read_bytes()
    assert (await post(data))["result"] == synthetic_result(data, 640, 480, "jpg")


async def test_a_slow_damaged_file_does_not_stall_other_calls(post: Post, png_small: bytes) -> None:
    # Pillow scans this byte by byte for about half a second.
    damaged = asyncio.ensure_future(post(b"\xff\xd8\xff" + b"\xff" * 1024 * 1024))
    await asyncio.sleep(0.05)  # let the damaged upload reach the server first
    small = asyncio.ensure_future(post(png_small))
    done, _ = await asyncio.wait({damaged, small}, return_when=asyncio.FIRST_COMPLETED)
    assert done == {small}
    assert code(await damaged) == 4000002


async def test_size_limit_is_5_mb(post: Post) -> None:
    at_limit = b"\xff\xd8\xff" + bytes(MAX_IMAGE_BYTES - 3)
    assert code(await post(at_limit)) == 4000002  # not too large: reaches the image check
    assert code(await post(at_limit + b"\x00")) == 4131000


async def test_size_limit_without_content_length(post: Post) -> None:
    """A chunked upload is cut off while streaming, not after buffering all of it."""
    boundary = "platepipe-test-boundary"

    async def chunked_body() -> AsyncIterator[bytes]:
        yield (
            f"--{boundary}\r\nContent-Disposition: form-data; name=image; filename=big.jpg\r\n"
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        yield b"\xff\xd8\xff"
        for _ in range(6):
            yield bytes(1024 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {
        "Authorization": SECRET_KEY,
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }
    assert code(await post(None, body=chunked_body(), headers=headers)) == 4131000


async def test_stats_count_calls_codes_and_images(
    emulator: tuple[str, EmulatorStats],
    session: aiohttp.ClientSession,
    post: Post,
    jpeg_hd: bytes,
    png_small: bytes,
) -> None:
    url, stats = emulator
    answer = await post(jpeg_hd)
    await post(jpeg_hd)
    await post(png_small)
    await post(b"hello")
    await post(png_small, headers={"Authorization": "wrong"})

    async with session.get(f"{url}/_emulator/stats") as response:
        served = await response.json()
    jpeg_sha = hashlib.sha256(jpeg_hd).hexdigest()
    png_sha = hashlib.sha256(png_small).hexdigest()
    assert served["calls"] == stats.calls == 5
    assert served["in_flight"] == 0 and served["max_in_flight"] == 1
    assert served["by_code"] == {"0": 3, "4000003": 1, "4010001": 1}
    assert served["by_sha256"] == {
        jpeg_sha: 2,
        png_sha: 1,
        hashlib.sha256(b"hello").hexdigest(): 1,
    }
    assert served["answers"][jpeg_sha] == answer


async def test_no_recording_keeps_memory_flat_and_latency_overlaps_calls(
    emulator_factory: StartEmulator, session: aiohttp.ClientSession, png_small: bytes
) -> None:
    url, stats = await emulator_factory(record=False, latency=(0.05, 0.1))

    async def call() -> None:
        form = aiohttp.FormData()
        form.add_field("image", io.BytesIO(png_small), filename="small.png")
        endpoint = f"{url}/v1.0/appkeys/{APP_KEY}/vehicle-plate"
        async with session.post(endpoint, data=form, headers={"Authorization": SECRET_KEY}) as r:
            assert (await r.json())["header"]["resultCode"] == 0

    started = asyncio.get_running_loop().time()
    await asyncio.gather(*(call() for _ in range(5)))
    assert asyncio.get_running_loop().time() - started >= 0.05
    assert stats.calls == 5 and stats.by_code == {0: 5}
    assert stats.max_in_flight == 5 and stats.in_flight == 0
    assert stats.by_sha256 == {} and stats.answers == {}


def test_help_explains_the_emulator_and_hides_the_secret() -> None:
    result = CliRunner().invoke(
        emulator_command, ["--help"], env={"NHN_OCR_SECRET_KEY": SECRET_KEY}
    )
    assert result.exit_code == 0
    assert "does not read images" in result.output
    assert "platepipe emulator --port 8089 --latency 0.05-0.15" in result.output
    assert SECRET_KEY not in result.output
    # The demo key is in the curl example on purpose, but never as the option's default.
    options = result.output.split("Options:")[1]
    assert "demo-secret-key" not in options


@pytest.mark.parametrize("latency", ["abc", "0.2-0.1", "-1", "0.1-"])
def test_bad_latency_is_a_usage_error(latency: str) -> None:
    result = CliRunner().invoke(emulator_command, ["--latency", latency])
    assert result.exit_code == 2
    assert "--latency" in result.output


def test_port_in_use_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(emulator_command, ["--port", str(port)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot listen on 127.0.0.1:{port}")
    assert result.output.count("\n") == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_command_serves_until_signalled(
    tmp_path: Path, session: aiohttp.ClientSession, png_small: bytes, signum: int
) -> None:
    env = os.environ | {"NHN_OCR_APP_KEY": APP_KEY, "NHN_OCR_SECRET_KEY": SECRET_KEY}
    program = "from pipeline.emulator import emulator_command; emulator_command()"
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-c", program, "--port", "0"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), SUBPROCESS_TIMEOUT_SECONDS)
        match = re.fullmatch(rb"platepipe emulator listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        url = match.group(1).decode()

        # The curl example from --help: -F 'image=@sample.png' -H 'Authorization: ...'
        form = aiohttp.FormData()
        form.add_field("image", io.BytesIO(png_small), filename="sample.png")
        endpoint = f"{url}/v1.0/appkeys/{APP_KEY}/vehicle-plate"
        async with session.post(endpoint, data=form, headers={"Authorization": SECRET_KEY}) as r:
            answer = await r.json()
        assert answer["result"] == synthetic_result(png_small, 320, 240, "png")

        proc.send_signal(signum)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), SUBPROCESS_TIMEOUT_SECONDS)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()
    assert stdout == b"" and stderr == b""  # nothing after the one line, and no traceback
    assert SECRET_KEY.encode() not in line + stdout + stderr
