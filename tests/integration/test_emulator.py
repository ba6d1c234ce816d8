"""The NHN-compatible emulator, over a real socket with a real aiohttp client."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import re
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from PIL import Image

from pipeline.emulator import (
    MAX_IMAGE_BYTES,
    NO_PLATE_SHARE,
    STATS_KEY,
    EmulatorStats,
    emulator_command,
    make_app,
    start_emulator,
    synthetic_answer,
    synthetic_result,
)
from tests.support.corpus import make_corpus

APP_KEY = "test-app-key"
SECRET_KEY = "test-secret-9f2c41"
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


def encode_image_with(
    path: Path, size: tuple[int, int], fmt: str, *, plate: bool, **options: Any
) -> bytes:
    """The first variant of a plain image whose synthetic answer has a plate (or has none)."""
    file_type = "png" if fmt == "PNG" else "jpg"
    for red in range(256):
        data = encode_image(path, size, fmt, red)
        if bool(synthetic_result(data, *size, file_type, **options)["values"]) == plate:
            return data
    raise AssertionError(f"no {fmt} variant with plate={plate}")


@pytest.fixture
def jpeg_hd(tmp_path: Path) -> bytes:
    """A 1280x720 JPEG whose synthetic answer has a plate."""
    return encode_image_with(tmp_path / "hd.jpg", (1280, 720), "JPEG", plate=True)


@pytest.fixture
def png_small(tmp_path: Path) -> bytes:
    """A 320x240 PNG whose synthetic answer has a plate."""
    return encode_image_with(tmp_path / "small.png", (320, 240), "PNG", plate=True)


@pytest.fixture
def png_plateless(tmp_path: Path) -> bytes:
    """A 320x240 PNG the emulator answers 4000201 VEHICLE_PLATE_NOT_FOUND."""
    return encode_image_with(tmp_path / "none.png", (320, 240), "PNG", plate=False)


def code(answer: dict[str, Any]) -> int:
    return answer["header"]["resultCode"]


async def test_success_is_deterministic_and_matches_synthetic_result(
    post: Post, jpeg_hd: bytes, png_small: bytes
) -> None:
    first = await post(jpeg_hd)
    assert first["header"] == {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"}
    assert first["result"] == synthetic_result(jpeg_hd, 1280, 720, "jpg")
    assert first["result"]["resolution"] == "normal"
    assert len(first["result"]["values"]) == len(first["result"]["boxes"]) == 1
    assert await post(jpeg_hd) == first

    small = await post(png_small)
    assert small["result"] == synthetic_result(png_small, 320, 240, "png")
    assert small["result"]["fileType"] == "png"
    assert small["result"]["resolution"] == "low"


NOT_FOUND_ANSWER = {
    "header": {
        "isSuccessful": False,
        "resultCode": 4000201,
        "resultMessage": "Vehicle plate not found in the image.",
    }
}


async def test_an_image_without_a_plate_is_4000201_with_no_result(
    emulator: tuple[str, EmulatorStats], post: Post, png_plateless: bytes
) -> None:
    _, stats = emulator
    answer = await post(png_plateless)
    assert answer == NOT_FOUND_ANSWER
    assert await post(png_plateless) == answer  # the same image, the same answer
    assert answer == synthetic_answer(png_plateless, 320, 240, "png")
    assert stats.by_code == {4000201: 2}
    # The image's own answer is recorded, as a success is: it is what a client must store.
    assert stats.answers == {hashlib.sha256(png_plateless).hexdigest(): answer}


async def test_a_4000201_answer_can_carry_an_empty_result_on_request(
    emulator_factory: StartEmulator, send: Send, png_plateless: bytes
) -> None:
    url, stats = await emulator_factory(no_plate_body="result")
    answer = json.loads((await send(url, png_plateless)).body)
    assert answer == {
        **NOT_FOUND_ANSWER,
        "result": {"fileType": "png", "values": [], "boxes": [], "resolution": "low"},
    }
    assert answer == synthetic_answer(png_plateless, 320, 240, "png", no_plate_body="result")
    assert stats.answers == {hashlib.sha256(png_plateless).hexdigest(): answer}


def plain_images(count: int) -> list[bytes]:
    """``count`` distinct small PNGs, each one colour."""
    images = []
    for n in range(count):
        out = io.BytesIO()
        Image.new("RGB", (16, 12), (n % 256, n // 256, 77)).save(out, "PNG")
        images.append(out.getvalue())
    return images


@pytest.mark.parametrize("share", [None, 0.0, 0.5, 1.0])
async def test_the_no_plate_share_is_deterministic_and_near_the_setting(
    emulator_factory: StartEmulator, send: Send, share: float | None
) -> None:
    options = {} if share is None else {"no_plate_share": share}
    expected_share = NO_PLATE_SHARE if share is None else share
    url, stats = await emulator_factory(**options)
    images = plain_images(400)
    codes = [(await send(url, data)).code() for data in images]
    assert set(codes) <= {0, 4000201}
    # Binomial(400, share): within 5 standard deviations (at most 50 images).
    spread = 5 * (400 * expected_share * (1 - expected_share)) ** 0.5
    assert abs(codes.count(4000201) - 400 * expected_share) <= spread, codes.count(4000201)
    for data, got in zip(images[:40], codes[:40], strict=True):
        assert (await send(url, data)).code() == got  # fixed by the bytes, call after call
    assert stats.by_code == Counter(codes) + Counter(codes[:40])
    for data in images:
        answer = stats.answers[hashlib.sha256(data).hexdigest()]
        assert answer == synthetic_answer(data, 16, 12, "png", **options)
        assert len(answer.get("result", {}).get("values", [])) == (
            answer["header"]["resultCode"] == 0
        )


async def test_several_plates_on_request_pair_values_with_boxes(
    emulator_factory: StartEmulator, send: Send
) -> None:
    url, stats = await emulator_factory(max_plates=3, no_plate_share=0)
    counts: Counter[int] = Counter()
    for data in plain_images(60):
        answer = json.loads((await send(url, data)).body)
        assert answer == synthetic_answer(data, 16, 12, "png", max_plates=3, no_plate_share=0)
        result = answer["result"]
        assert len(result["values"]) == len(result["boxes"])
        counts[len(result["values"])] += 1
    assert set(counts) == {1, 2, 3}, counts
    assert stats.by_code == {0: 60}


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
    # Pillow scans this byte by byte for about half a second; the end marker gets it that far.
    damaged = asyncio.ensure_future(post(b"\xff\xd8\xff" + b"\xff" * 1024 * 1024 + b"\xff\xd9"))
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
    chaos_example = "platepipe emulator --fault-rate 0.25 --rate-limit 40 --latency 0.05-0.15"
    assert chaos_example in result.output
    options = ("--fault-rate", "--faults", "--seed", "--slow-seconds", "--rate-limit")
    options += ("--limit-code", "--no-plate-share", "--no-plate-body", "--max-plates", "--latency")
    for option in options:
        help_text = result.output.split(f"\n  {option} ", 1)[1].split("\n  -")[0]
        assert f"e.g. {option} " in " ".join(help_text.split()), option
    assert "4000201" in result.output and "one plate at most" in result.output
    shown = " ".join(result.output.split())
    assert "5000503, 5004001, 5004002" in shown
    assert "drawn only when named: 5004003, 4000005, 4000401" in shown
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


@contextlib.asynccontextmanager
async def serve_command(
    cwd: Path, *options: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, bytes]]:
    """Run `platepipe emulator` in a child process; yield it, its URL and its first line."""
    env = os.environ | {"NHN_OCR_APP_KEY": APP_KEY, "NHN_OCR_SECRET_KEY": SECRET_KEY}
    program = "from pipeline.emulator import emulator_command; emulator_command()"
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-c", program, "--port", "0", *options],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), SUBPROCESS_TIMEOUT_SECONDS)
        match = re.fullmatch(rb"platepipe emulator listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        yield proc, match.group(1).decode(), line
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_command_serves_until_signalled(
    tmp_path: Path, session: aiohttp.ClientSession, png_small: bytes, signum: int
) -> None:
    async with serve_command(tmp_path) as (proc, url, line):
        # The curl example from --help: -F 'image=@sample.png' -H 'Authorization: ...'
        form = aiohttp.FormData()
        form.add_field("image", io.BytesIO(png_small), filename="sample.png")
        endpoint = f"{url}/v1.0/appkeys/{APP_KEY}/vehicle-plate"
        async with session.post(endpoint, data=form, headers={"Authorization": SECRET_KEY}) as r:
            answer = await r.json()
        assert answer["result"] == synthetic_result(png_small, 320, 240, "png")

        proc.send_signal(signum)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), SUBPROCESS_TIMEOUT_SECONDS)
    assert proc.returncode == 0, stderr.decode()
    assert stdout == b"" and stderr == b""  # nothing after the one line, and no traceback
    assert SECRET_KEY.encode() not in line + stdout + stderr


# --- fault injection and the call limit ---------------------------------------------------------


class Wire:
    """What the client got, before any JSON parsing."""

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def code(self) -> int:
        return code(json.loads(self.body))


Send = Callable[..., Awaitable[Wire]]


@pytest.fixture
def send(session: aiohttp.ClientSession) -> Send:
    """POST an image to an emulator and return the raw answer, whatever its status."""

    async def send(
        url: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> Wire:
        form = aiohttp.FormData()
        form.add_field("image", io.BytesIO(data), filename="upload.bin")
        endpoint = f"{url}/v1.0/appkeys/{APP_KEY}/vehicle-plate"
        headers = {"Authorization": SECRET_KEY} if headers is None else headers
        options = {} if timeout is None else {"timeout": timeout}
        async with session.post(endpoint, data=form, headers=headers, **options) as response:
            return Wire(response.status, response.headers, await response.read())

    return send


def success_answer(data: bytes, size: tuple[int, int], file_type: str) -> dict[str, Any]:
    header = {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"}
    return {"header": header, "result": synthetic_result(data, *size, file_type)}


@pytest.mark.parametrize(
    ("kind", "expected", "message"),
    [
        ("5000001", 5000001, "Internal Api fail."),
        ("-1", -1, "Unknown error."),
        ("4000006", 4000006, "API call limit exceeded"),
        (
            "5000503",
            5000503,
            "The API you requested is temporarily unavailable. Please try again later.",
        ),
        ("5004001", 5004001, "Vehicle Plate OCR Api fail."),
        ("5004002", 5004002, "Vehicle Plate OCR Api returned empty body."),
        ("5004003", 5004003, "Vehicle Plate OCR failed to recognize the vehicle plate."),
    ],
)
async def test_result_code_faults(
    emulator_factory: StartEmulator,
    send: Send,
    png_small: bytes,
    kind: str,
    expected: int,
    message: str,
) -> None:
    url, stats = await emulator_factory(fault_rate=1, faults=kind)
    wire = await send(url, png_small)
    assert wire.status == 200
    header = {"isSuccessful": False, "resultCode": expected, "resultMessage": message}
    assert json.loads(wire.body) == {"header": header}
    assert stats.faults == {kind: 1} and stats.by_code == {expected: 1}
    assert stats.by_sha256 == {hashlib.sha256(png_small).hexdigest(): 1}
    assert stats.answers == {}  # the image never got its real answer


@pytest.mark.parametrize(
    ("kind", "status"), [("http_502", 502), ("http_503", 503), ("http_429", 429)]
)
async def test_gateway_faults(
    emulator_factory: StartEmulator, send: Send, png_small: bytes, kind: str, status: int
) -> None:
    url, stats = await emulator_factory(fault_rate=1, faults=kind)
    wire = await send(url, png_small)
    assert wire.status == status
    assert wire.headers["Content-Type"].startswith("text/html")
    assert f"<h1>{status} ".encode() in wire.body and len(wire.body) < 512
    assert wire.headers.get("Retry-After") == ("1" if status == 429 else None)
    assert stats.faults == {kind: 1} and stats.by_code == {}  # no resultCode went out


async def test_bad_json_fault(
    emulator_factory: StartEmulator, send: Send, png_small: bytes
) -> None:
    url, stats = await emulator_factory(fault_rate=1, faults="bad_json")
    wire = await send(url, png_small)
    assert wire.status == 200 and wire.headers["Content-Type"].startswith("application/json")
    assert wire.body.startswith(b'{"header"')
    with pytest.raises(ValueError):
        wire.code()
    assert stats.faults == {"bad_json": 1}


async def test_drop_fault_is_a_connection_error_not_a_hang(
    emulator_factory: StartEmulator, send: Send, png_small: bytes
) -> None:
    url, stats = await emulator_factory(fault_rate=1, faults="drop")
    for _ in range(2):  # the second call cannot ride on a kept-alive connection either
        async with asyncio.timeout(5):  # a hang fails here with TimeoutError
            with pytest.raises(aiohttp.ClientConnectionError):
                await send(url, png_small)
    assert stats.faults == {"drop": 2} and stats.calls == 2


async def test_slow_fault_outlasts_a_short_client_timeout_then_answers(
    emulator_factory: StartEmulator, send: Send, png_small: bytes
) -> None:
    url, stats = await emulator_factory(fault_rate=1, faults="slow", slow_seconds=0.4)
    with pytest.raises(TimeoutError):
        await send(url, png_small, timeout=aiohttp.ClientTimeout(total=0.1))
    loop = asyncio.get_running_loop()
    started = loop.time()
    wire = await send(url, png_small, timeout=aiohttp.ClientTimeout(total=5))
    assert loop.time() - started >= 0.4
    assert json.loads(wire.body) == success_answer(png_small, (320, 240), "png")
    assert stats.faults == {"slow": 2} and stats.by_code == {0: 2}


async def test_half_the_calls_fault_reproducibly_with_a_seed(
    emulator_factory: StartEmulator, send: Send, png_small: bytes
) -> None:
    faults = "5000001,http_503,bad_json"  # the quick kinds; each one alone is tested above

    def outcome(wire: Wire) -> str:
        if wire.status != 200:
            return f"http_{wire.status}"
        try:
            return str(wire.code())
        except ValueError:
            return "bad_json"

    async def outcomes(url: str) -> list[str]:
        return [outcome(await send(url, png_small)) for _ in range(100)]

    url, stats = await emulator_factory(fault_rate=0.5, faults=faults, seed=7)
    first = await outcomes(url)
    faulted = Counter(o for o in first if o != "0")
    assert 30 <= faulted.total() <= 70
    assert stats.faults == faulted and set(faulted) == {"5000001", "http_503", "bad_json"}
    assert stats.calls == 100 and stats.by_code[0] == 100 - faulted.total()
    assert sum(stats.admitted_per_second) == 100  # faulted calls were admitted
    sha = hashlib.sha256(png_small).hexdigest()
    assert stats.answers[sha] == success_answer(png_small, (320, 240), "png")

    again_url, again_stats = await emulator_factory(fault_rate=0.5, faults=faults, seed=7)
    assert await outcomes(again_url) == first
    assert again_stats.faults == stats.faults


async def test_credential_failures_are_never_faulted_nor_limited(
    emulator_factory: StartEmulator, send: Send, png_small: bytes
) -> None:
    url, stats = await emulator_factory(fault_rate=1, faults="http_502", rate_limit=1)
    wrong = {"Authorization": "wrong"}
    for _ in range(5):
        assert (await send(url, png_small, headers=wrong)).code() == 4010001
        assert (await send(url, png_small, headers={})).code() == 4000005
    assert stats.faults == {} and stats.rate_limited == 0
    assert sum(stats.admitted_per_second) == 0
    assert (await send(url, png_small)).status == 502  # the limit of 1 was still unused
    assert (await send(url, png_small)).code() == 4000006
    assert (await send(url, png_small, headers=wrong)).code() == 4010001  # not a refusal
    assert stats.faults == {"http_502": 1} and stats.rate_limited == 1


async def test_rate_limit_admits_n_per_sliding_second(
    emulator_factory: StartEmulator,
    send: Send,
    session: aiohttp.ClientSession,
    png_small: bytes,
) -> None:
    url, stats = await emulator_factory(rate_limit=10)
    burst = await asyncio.gather(*(send(url, png_small) for _ in range(30)))
    assert sorted(wire.code() for wire in burst) == [0] * 10 + [4000006] * 20
    refused = next(json.loads(w.body) for w in burst if w.code() == 4000006)
    assert refused == {
        "header": {
            "isSuccessful": False,
            "resultCode": 4000006,
            "resultMessage": "API call limit exceeded",
        }
    }
    assert stats.rate_limited == 20 and stats.faults == {}
    assert sum(stats.admitted_per_second) == 10
    sha = hashlib.sha256(png_small).hexdigest()
    assert stats.by_sha256[sha] == 30  # refused calls count as calls for the image
    assert stats.answers[sha] == success_answer(png_small, (320, 240), "png")

    await asyncio.sleep(1.05)  # the whole burst leaves the window
    again = await asyncio.gather(*(send(url, png_small) for _ in range(10)))
    assert [wire.code() for wire in again] == [0] * 10
    assert (await send(url, png_small)).code() == 4000006

    async with session.get(f"{url}/_emulator/stats") as response:
        served = await response.json()
    assert served["rate_limited"] == 21 and served["calls"] == 41
    assert served["by_code"] == {"0": 20, "4000006": 21}
    assert sum(served["admitted_per_second"]) == 20
    assert max(served["admitted_per_second"]) <= 10
    assert served["faults"] == {}


async def test_the_rate_limit_can_answer_5000503_like_nhns_upstream(
    emulator_factory: StartEmulator, send: Send, png_small: bytes
) -> None:
    url, stats = await emulator_factory(rate_limit=5, limit_code=5000503)
    burst = await asyncio.gather(*(send(url, png_small) for _ in range(12)))
    assert sorted(wire.code() for wire in burst) == [0] * 5 + [5000503] * 7
    refused = next(json.loads(w.body) for w in burst if w.code() == 5000503)
    message = "The API you requested is temporarily unavailable. Please try again later."
    assert refused == {
        "header": {"isSuccessful": False, "resultCode": 5000503, "resultMessage": message}
    }
    assert stats.rate_limited == 7 and stats.faults == {}
    assert stats.by_code == {0: 5, 5000503: 7}
    assert sum(stats.admitted_per_second) == 5


async def test_default_faults_draw_the_new_codes_but_not_5004003(
    emulator_factory: StartEmulator, send: Send, png_small: bytes
) -> None:
    url, stats = await emulator_factory(fault_rate=1, seed=5, slow_seconds=0)
    for _ in range(300):
        with contextlib.suppress(aiohttp.ClientConnectionError):  # a "drop"
            await send(url, png_small)
    assert {"5000503", "5004001", "5004002"} <= set(stats.faults)
    assert "5004003" not in stats.faults and 5004003 not in stats.by_code


async def test_a_fault_never_replaces_the_recorded_answer(
    emulator_factory: StartEmulator, send: Send, png_small: bytes, jpeg_hd: bytes
) -> None:
    faults = "5000001,-1,4000006,5000503,5004003,http_502,bad_json"
    url, stats = await emulator_factory(fault_rate=0.5, faults=faults, seed=11)
    for _ in range(40):
        await send(url, png_small)
        await send(url, jpeg_hd)
    assert 0 < sum(stats.faults.values()) < 80
    png_sha, jpeg_sha = (hashlib.sha256(d).hexdigest() for d in (png_small, jpeg_hd))
    assert stats.by_sha256 == {png_sha: 40, jpeg_sha: 40}
    assert stats.answers == {
        png_sha: success_answer(png_small, (320, 240), "png"),
        jpeg_sha: success_answer(jpeg_hd, (1280, 720), "jpg"),
    }


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda jpeg, png: jpeg[:-2], id="jpeg-without-eoi"),
        pytest.param(lambda jpeg, png: jpeg[: len(jpeg) // 2], id="jpeg-cut-in-half"),
        pytest.param(lambda jpeg, png: jpeg + bytes(1024), id="jpeg-padded-by-1kib"),
        pytest.param(lambda jpeg, png: png[:-12], id="png-without-iend"),
        pytest.param(lambda jpeg, png: png[: len(png) // 2], id="png-cut-in-half"),
    ],
)
async def test_truncated_images_are_invalid_files(
    post: Post, jpeg_hd: bytes, png_small: bytes, cut: Callable[[bytes, bytes], bytes]
) -> None:
    assert code(await post(cut(jpeg_hd, png_small))) == 4000002


async def test_every_corpus_image_is_still_accepted(post: Post, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", n_images=24, large_every=12)
    for path in corpus.images:
        data = path.read_bytes()
        with Image.open(path) as image:
            expected = synthetic_answer(
                data, *image.size, "png" if image.format == "PNG" else "jpg"
            )
        assert await post(data) == expected, path


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--faults", "nonsense"], "--faults"),
        (["--faults", "drop,Drop"], "--faults"),
        (["--faults", ""], "--faults"),
        (["--fault-rate", "1.5"], "--fault-rate"),
        (["--rate-limit", "-1"], "--rate-limit"),
        (["--slow-seconds", "-1"], "--slow-seconds"),
        (["--limit-code", "429"], "--limit-code"),
        (["--no-plate-share", "1.5"], "--no-plate-share"),
        (["--max-plates", "0"], "--max-plates"),
        (["--no-plate-body", "empty"], "--no-plate-body"),
        (["--faults", "-1,drop", "--port", "70000"], "--port"),  # -1 is a kind, not an option
    ],
)
def test_bad_chaos_options_are_usage_errors(args: list[str], option: str) -> None:
    result = CliRunner().invoke(emulator_command, args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output


@pytest.mark.parametrize(
    "options",
    [
        {"fault_rate": 1.5},
        {"faults": "nonsense"},
        {"rate_limit": -1},
        {"slow_seconds": -0.1},
        {"limit_code": 4000005},
        {"no_plate_share": -0.1},
        {"max_plates": 0},
        {"no_plate_body": "empty"},
    ],
)
def test_make_app_refuses_bad_chaos_options(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_app(APP_KEY, SECRET_KEY, **options)


async def test_command_options_reach_the_server(
    tmp_path: Path, session: aiohttp.ClientSession, send: Send, png_small: bytes
) -> None:
    options = ["--fault-rate", "1", "--faults", "http_503", "--seed", "3", "--rate-limit", "1"]
    async with serve_command(tmp_path, *options) as (_, url, _):
        assert (await send(url, png_small)).status == 503
        assert (await send(url, png_small)).code() == 4000006
        async with session.get(f"{url}/_emulator/stats") as response:
            served = await response.json()
    assert served["faults"] == {"http_503": 1} and served["rate_limited"] == 1
    assert served["calls"] == 2 and sum(served["admitted_per_second"]) == 1


async def test_plate_options_reach_the_server(
    tmp_path: Path, session: aiohttp.ClientSession, send: Send
) -> None:
    images = plain_images(30)
    options = ["--no-plate-share", "0", "--max-plates", "3", "--rate-limit", "100"]
    options += ["--limit-code", "5000503", "--latency", "0.01-0.02"]
    async with serve_command(tmp_path, *options) as (_, url, _):
        for data in images:
            answer = json.loads((await send(url, data)).body)
            assert answer == synthetic_answer(data, 16, 12, "png", max_plates=3, no_plate_share=0)
        refused = await asyncio.gather(*(send(url, images[0]) for _ in range(100)))
        assert 5000503 in {wire.code() for wire in refused}
        async with session.get(f"{url}/_emulator/stats") as response:
            served = await response.json()
    # Some of the first 30 calls may have left the sliding second before the burst.
    assert served["by_code"].keys() == {"0", "5000503"}  # no 4000201 at share 0
    assert served["rate_limited"] == served["by_code"]["5000503"] > 0
    assert served["calls"] == served["by_code"]["0"] + served["by_code"]["5000503"] == 130
