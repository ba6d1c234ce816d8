"""NhnClient against a real server on 127.0.0.1: the emulator, the odd server's strange answers
and endpoints that cannot work, and sockets that misbehave."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from pipeline.client import NhnClient
from pipeline.config import ApiSettings, Secret
from pipeline.emulator import start_emulator
from pipeline.records import Answer
from pipeline.verdicts import Verdict
from tests.support import odd_server
from tests.support.corpus import make_image
from tests.support.tls import self_signed

APP_KEY, SECRET = "k", "s3cret-value"


def settings(url: str, **overrides) -> ApiSettings:
    return ApiSettings(url, APP_KEY, Secret(SECRET), **overrides)


async def test_uploads_past_one_mib_succeed(tmp_path):
    path = tmp_path / "noise.png"
    size = (1200, 900)
    Image.frombytes("RGB", size, random.Random(1).randbytes(size[0] * size[1] * 3)).save(path)
    data = path.read_bytes()
    assert len(data) > 1024 * 1024
    # A plate for every image: this noise picture is one the emulator would answer 4000201.
    runner, url = await start_emulator(app_key=APP_KEY, secret_key=SECRET, no_plate_share=0)
    try:
        async with NhnClient(settings(url), connections=2) as client:
            answer = await client.recognize(data, "image.png", "image/png")
    finally:
        await runner.cleanup()

    assert answer.verdict is Verdict.DONE, answer
    assert answer.recognition.file_type == "png"


async def test_wrong_secret_is_fatal_and_never_echoed(tmp_path):
    make_image(tmp_path / "a.jpg", 64, 48, "JPEG", seed=1)
    runner, url = await start_emulator(app_key=APP_KEY, secret_key="another")
    try:
        async with NhnClient(settings(url), connections=1) as client:
            answer = await client.recognize(
                (tmp_path / "a.jpg").read_bytes(), "a.jpg", "image/jpeg"
            )
    finally:
        await runner.cleanup()

    assert (answer.verdict, answer.code) == (Verdict.FATAL, "4010001")
    assert SECRET not in repr(answer)


async def test_refused_connection_is_retryable_and_no_call():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    async with NhnClient(settings(f"http://127.0.0.1:{port}"), connections=1) as client:
        answer = await client.recognize(b"\xff\xd8\xff", "a.jpg", "image/jpeg")

    assert (answer.verdict, answer.code) == (Verdict.OUTAGE, "connection_refused")
    assert answer.reached is False  # no call was paid for
    assert f"127.0.0.1:{port}" in answer.message
    assert SECRET not in answer.message


async def test_a_server_slower_than_the_timeout_is_retryable():
    released = asyncio.Event()

    async def silent(reader, writer):
        await released.wait()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with NhnClient(
            settings(f"http://127.0.0.1:{port}", timeout_s=0.3), connections=1
        ) as client:
            answer = await client.recognize(b"\xff\xd8\xff", "a.jpg", "image/jpeg")
    finally:
        released.set()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)  # let the handler close its side

    assert (answer.verdict, answer.code) == (Verdict.OUTAGE, "timeout")
    assert answer.reached is True  # sent, and maybe processed: it counts as a call
    assert answer.latency_s < 2


async def test_a_dropped_connection_is_retryable():
    async def drop(reader, writer):
        await reader.read(100)
        writer.transport.abort()
        await asyncio.sleep(0)

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with NhnClient(settings(f"http://127.0.0.1:{port}"), connections=1) as client:
            answer = await client.recognize(b"\xff\xd8\xff", "a.jpg", "image/jpeg")
    finally:
        server.close()
        await server.wait_closed()

    assert answer.verdict is Verdict.OUTAGE
    assert answer.code in ("connection", "client_error")
    assert answer.reached is True


async def test_a_connect_timeout_is_retryable_and_no_call():
    # A listening socket that never accepts, its accept queue full: the kernel drops further
    # connection attempts, so the connect itself times out.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        api = settings(f"http://127.0.0.1:{port}", connect_timeout_s=0.3, timeout_s=5)
        async with NhnClient(api, connections=1) as client:
            answer = await client.recognize(b"\xff\xd8\xff", "a.jpg", "image/jpeg")
    finally:
        for sock in (*fillers, listener):
            sock.close()

    assert (answer.verdict, answer.code, answer.reached) == (Verdict.OUTAGE, "timeout", False)
    assert answer.latency_s < 3


async def test_a_call_that_timed_out_waiting_for_a_connection_is_no_call():
    released = asyncio.Event()

    async def silent(reader, writer):
        await released.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        api = settings(f"http://127.0.0.1:{port}", timeout_s=0.5)
        async with NhnClient(api, connections=1) as client:
            first, second = await asyncio.gather(
                client.recognize(b"\xff\xd8\xff", "a.jpg", "image/jpeg"),
                client.recognize(b"\xff\xd8\xff", "b.jpg", "image/jpeg"),
            )
    finally:
        released.set()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)

    assert {first.code, second.code} == {"timeout"}
    assert sorted([first.reached, second.reached]) == [False, True]


# --- the odd server: answers that cannot hurt -----------------------------------------------


async def odd_answer(mode: str, **overrides) -> tuple[Answer, int]:
    """The answer to one call to the odd server in MODE, and the hits on its /elsewhere."""
    runner, url = await odd_server.start(mode)
    try:
        async with NhnClient(settings(url, **overrides), connections=2) as client:
            answer = await client.recognize(b"\xff\xd8\xff", "a.jpg", "image/jpeg")
        return answer, runner.app[odd_server.HITS]["count"]
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("huge", "over the 1048576-byte cap"),
        ("huge-declared", "a body of 268435456 bytes"),
        ("gzip-bomb", "over the 1048576-byte cap"),
        ("brotli", "an encoding that was not asked for: br"),
        ("deep", "nested deeper than"),
        ("bad-code", "resultCode is a float"),
        ("garbage", "JSONDecodeError"),
    ],
)
async def test_a_body_that_cannot_be_taken_is_a_quick_bad_response(mode: str, reason: str):
    started = time.monotonic()

    answer, _ = await odd_answer(mode)

    assert (answer.verdict, answer.code, answer.http_status) == (Verdict.RETRY, "bad_response", 200)
    assert reason in answer.message
    assert answer.reached is True
    assert time.monotonic() - started < 5


async def test_a_gzip_answer_within_the_cap_is_taken():
    answer, _ = await odd_answer("gzip-success")

    assert answer.verdict is Verdict.DONE, answer
    assert answer.recognition.plates[0].value == "123가4567"
    assert json.loads(answer.recognition.raw)["result"]["fileType"] == "png"


async def test_a_poisoned_answer_is_stored_clean():
    answer, _ = await odd_answer("poison")

    assert answer.verdict is Verdict.DONE
    recognition = answer.recognition
    texts = [answer.message, recognition.raw, recognition.file_type, recognition.resolution]
    texts += [p.value for p in recognition.plates]
    for text in texts:
        text.encode("utf-8")  # no lone surrogate
        assert SECRET not in text and "\x00" not in text
    assert recognition.plates[0].value.endswith("Authorization: ***")


async def test_odd_types_are_not_taken_as_they_come():
    answer, _ = await odd_answer("bad-types")

    assert answer.verdict is Verdict.DONE
    plates = answer.recognition.plates
    assert [p.conf for p in plates] == [None, None, None, None]  # "0.93", 5.0, -1, 1e308
    assert [p.box is None for p in plates] == [True, True, False, False]  # 340.5, "3231"


async def test_a_redirect_is_fatal_never_followed_and_named():
    answer, hits = await odd_answer("redirect")

    assert (answer.verdict, answer.code, answer.http_status) == (Verdict.FATAL, "redirect", 301)
    assert hits == 0
    assert "/elsewhere?auth=***" in answer.message
    assert SECRET not in answer.message


@pytest.mark.parametrize("status", [404, 405, 407, 501])
async def test_statuses_of_an_endpoint_that_cannot_work_are_fatal(status: int):
    answer, _ = await odd_answer(f"status-{status}")

    assert (answer.verdict, answer.code, answer.reached) == (Verdict.FATAL, f"http_{status}", True)
    assert f"HTTP {status}" in answer.message


# --- endpoints that cannot work -------------------------------------------------------------


async def test_an_unknown_host_is_fatal_fast_and_no_call():
    # .invalid never resolves (RFC 2606): the resolver answers at once, nothing is sent.
    started = time.monotonic()
    async with NhnClient(settings("https://ocr.platepipe-test.invalid"), connections=1) as client:
        answer = await client.recognize(b"\xff\xd8\xff", "a.jpg", "image/jpeg")

    assert (answer.verdict, answer.code, answer.reached) == (Verdict.FATAL, "unknown_host", False)
    assert "ocr.platepipe-test.invalid" in answer.message
    assert time.monotonic() - started < 5


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


async def tls_answer(certificate, **overrides) -> Answer:
    runner, url = await odd_server.start("guide", odd_server.server_tls(*map(str, certificate)))
    try:
        async with NhnClient(settings(url, **overrides), connections=1) as client:
            return await client.recognize(b"\xff\xd8\xff", "a.jpg", "image/jpeg")
    finally:
        await runner.cleanup()


async def test_a_certificate_that_does_not_verify_is_fatal_and_no_call(certificate):
    answer = await tls_answer(certificate)

    assert (answer.verdict, answer.code, answer.reached) == (Verdict.FATAL, "tls", False)
    assert "does not verify" in answer.message and "--ca-bundle" in answer.message
    assert "\n" not in answer.message


async def test_ca_bundle_trusts_a_private_ca(certificate):
    answer = await tls_answer(certificate, ca_bundle=str(certificate[0]))

    assert answer.verdict is Verdict.DONE, answer
    assert answer.recognition.plates[0].value == "123가4567"


async def test_https_to_a_plain_http_server_is_fatal_tls():
    runner, url = await odd_server.start("guide")
    try:
        api = settings(url.replace("http://", "https://"))
        async with NhnClient(api, connections=1) as client:
            answer = await client.recognize(b"\xff\xd8\xff", "a.jpg", "image/jpeg")
    finally:
        await runner.cleanup()

    assert (answer.verdict, answer.code, answer.reached) == (Verdict.FATAL, "tls", False)
    assert "--ca-bundle" in answer.message


# --- memory: a huge body or a bomb costs no more than the cap -------------------------------

MEASURE = """
import asyncio, json, sys
from pipeline.client import NhnClient
from pipeline.config import ApiSettings, Secret

def peak_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))

async def main(url):
    async with NhnClient(ApiSettings(url, "k", Secret("s")), connections=1) as client:
        await client.recognize(b"warm", "a.jpg", "image/jpeg")  # a first call's own cost
        before = peak_kb()
        answer = await client.recognize(b"\\xff\\xd8\\xff", "a.jpg", "image/jpeg")
    print(json.dumps({"code": answer.code, "growth_kb": peak_kb() - before}))

asyncio.run(main(sys.argv[1]))
"""
MAX_GROWTH_KB = 50 * 1024


@pytest.mark.parametrize("mode", ["huge", "gzip-bomb"])
def test_memory_stays_flat_whatever_the_server_sends(mode, start_odd_server):
    url = start_odd_server(mode)

    result = subprocess.run(
        [sys.executable, "-c", MEASURE, url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )

    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    assert measured["code"] == "bad_response"
    assert measured["growth_kb"] < MAX_GROWTH_KB, measured
