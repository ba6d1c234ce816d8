"""NhnClient against a real server on 127.0.0.1: the emulator, and sockets that misbehave."""

from __future__ import annotations

import asyncio
import random
import socket

from PIL import Image

from pipeline.client import NhnClient
from pipeline.config import ApiSettings, Secret
from pipeline.emulator import start_emulator
from pipeline.outcomes import Kind
from tests.support.corpus import make_image

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

    assert answer.kind is Kind.DONE, answer
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

    assert (answer.kind, answer.code) == (Kind.FATAL, "4010001")
    assert SECRET not in repr(answer)


async def test_refused_connection_is_retryable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    async with NhnClient(settings(f"http://127.0.0.1:{port}"), connections=1) as client:
        answer = await client.recognize(b"\xff\xd8\xff", "a.jpg", "image/jpeg")

    assert (answer.kind, answer.code) == (Kind.RETRY, "connection")
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

    assert (answer.kind, answer.code) == (Kind.RETRY, "timeout")
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

    assert answer.kind is Kind.RETRY
    assert answer.code in ("connection", "client_error")
