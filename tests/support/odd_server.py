"""A misbehaving stand-in for the API, for what the emulator will not do: answers with
strange but possible content, and endpoints that cannot work.
Run: python -m tests.support.odd_server MODE [--tls CERT KEY] (prints its URL as JSON).

Modes:
- guide: the guide's success answer, as the API sends it
- odd-success: success with a long fileType, a coordinate past int32, NUL in a plate value
- garbage: HTTP 200 with a binary body
- echo-502: a gateway's 502 page that echoes the request's headers, secret included
- retry-after: HTTP 429 asking for an hour's pause
- huge: HTTP 200 streaming 256 MB, chunked (never built in memory)
- huge-declared: the same with its Content-Length announced
- gzip-bomb: a gzip body, streamed, of about 10 MB that inflates to 10 GB
- gzip-success: the guide's success answer, gzip-encoded, as a gateway may send it
- brotli: a body in an encoding nobody asked for (Content-Encoding: br)
- deep: a JSON answer nested DEEP_LEVELS levels deep
- poison: success whose texts hold lone surrogates, NUL, control characters and the
  request's Authorization header (the secret) echoed into the plate value and the message
- bad-types: success with conf "0.93" (a string), 5.0, -1 and 1e308, and fractional coordinates
- bad-code: resultCode 0.5
- redirect: HTTP 301 to /elsewhere on this server, with the secret echoed in the Location;
  /elsewhere answers success to any method and counts its hits (GET /_hits)
- status-NNN: HTTP NNN with a short body (e.g. status-404, status-407, status-501)
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import zlib

from aiohttp import web

ODD_SUCCESS = {
    "header": {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"},
    "result": {
        "fileType": "jpeg-baseline-progressive",
        "values": [{"value": "12\u0000가3456", "conf": 0.9}, {"value": "34나5678", "conf": 0.8}],
        "boxes": [
            {"x1": 10**10, "y1": 1, "x2": 2, "y2": 1, "x3": 2, "y3": 2, "x4": 1, "y4": 2},
            {"x1": 1, "y1": 1, "x2": 2, "y2": 1, "x3": 2, "y3": 2, "x4": 1, "y4": 2},
        ],
        "resolution": "low",
    },
}
GUIDE_BOX = {
    "x1": 340,
    "y1": 3231,
    "x2": 523,
    "y2": 3231,
    "x3": 523,
    "y3": 3297,
    "x4": 340,
    "y4": 3297,
}
GUIDE_SUCCESS = {
    "header": {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"},
    "result": {
        "fileType": "png",
        "values": [{"value": "123가4567", "conf": 0.93}],
        "boxes": [GUIDE_BOX],
        "resolution": "normal",
    },
}
HUGE_BYTES = 256 * 1024 * 1024
CHUNK_BYTES = 64 * 1024
BOMB_INFLATED_BYTES = 10 * 1024**3
DEEP_LEVELS = 100_000
MODE = web.AppKey("mode", str)
HITS = web.AppKey("hits", dict)  # {"count": n}: mutable, as the app is frozen once it runs


def poison(authorization: str) -> bytes:
    """A success answer whose every text is hurtful; lone surrogates can only be written as
    JSON escapes, so the body is valid UTF-8 that decodes to invalid text."""
    echo = json.dumps(f"Authorization: {authorization}")[1:-1]
    return (
        '{"header": {"isSuccessful": true, "resultCode": 0, '
        f'"resultMessage": "OK \\ud800 {echo} \\u0000\\u001b[31m"}}, '
        '"result": {"fileType": "jp\\udfffg\\u0000", "resolution": "nor\\u0007mal\\ud83d", '
        f'"values": [{{"value": "12\\ud800가\\u00003456 {"." * 30} {echo}", "conf": 0.9}}], '
        f'"boxes": [{json.dumps(GUIDE_BOX)}]}}}}'
    ).encode()


def bad_types() -> dict:
    fractional = {**GUIDE_BOX, "x1": 340.5}
    return {
        "header": {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"},
        "result": {
            "fileType": "png",
            "values": [
                {"value": "11가1111", "conf": "0.93"},
                {"value": "22나2222", "conf": 5.0},
                {"value": "33다3333", "conf": -1},
                {"value": "44라4444", "conf": 1e308},
            ],
            "boxes": [fractional, {**GUIDE_BOX, "y2": "3231"}, GUIDE_BOX, GUIDE_BOX],
            "resolution": "normal",
        },
    }


def gzip_bomb_parts() -> tuple[bytes, bytes]:
    """A gzip header with its first MiB of zeros, and a block that inflates to one more MiB;
    after a full flush a block refers to nothing before it, so it can be repeated as is."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    head = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    return head, block


async def stream(
    request: web.Request, response: web.StreamResponse, chunks: object
) -> web.StreamResponse:
    await response.prepare(request)
    try:
        for chunk in chunks:  # type: ignore[attr-defined]
            await response.write(chunk)
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        pass  # the client hung up, as it should
    return response


async def handle(request: web.Request) -> web.StreamResponse:
    await request.read()
    mode = request.app[MODE]
    authorization = request.headers.get("Authorization", "")
    if mode == "guide":
        return web.json_response(GUIDE_SUCCESS)
    if mode == "odd-success":
        return web.json_response(ODD_SUCCESS)
    if mode == "garbage":
        return web.Response(body=b"\x00\x01garbage\xff", content_type="application/json")
    if mode == "echo-502":
        headers = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
        return web.Response(status=502, text=f"<html>Bad Gateway\n{headers}</html>")
    if mode == "retry-after":
        return web.Response(status=429, headers={"Retry-After": "3600"}, text="slow down")
    if mode in ("huge", "huge-declared"):
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if mode == "huge-declared":
            response.content_length = HUGE_BYTES
        else:
            response.enable_chunked_encoding()
        chunk = b" " * CHUNK_BYTES
        return await stream(request, response, (chunk for _ in range(HUGE_BYTES // CHUNK_BYTES)))
    if mode == "gzip-bomb":
        head, block = gzip_bomb_parts()
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )
        response.enable_chunked_encoding()
        blocks = BOMB_INFLATED_BYTES // (1024 * 1024) - 1
        return await stream(request, response, [head, *([block] * blocks)])
    if mode == "gzip-success":
        body = zlib.compress(json.dumps(GUIDE_SUCCESS).encode(), wbits=16 + zlib.MAX_WBITS)
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        return web.Response(body=body, headers=headers)
    if mode == "brotli":
        headers = {"Content-Encoding": "br", "Content-Type": "application/json"}
        return web.Response(body=b"\x8b\x03\x80{}\x03", headers=headers)
    if mode == "deep":
        body = b'{"header": {"resultCode": 0}, "result": ' + b"[" * DEEP_LEVELS
        return web.Response(body=body + b"]" * DEEP_LEVELS + b"}", content_type="application/json")
    if mode == "poison":
        return web.Response(body=poison(authorization), content_type="application/json")
    if mode == "bad-types":
        return web.json_response(bad_types())
    if mode == "bad-code":
        return web.json_response({"header": {"isSuccessful": True, "resultCode": 0.5}})
    if mode == "redirect":
        location = f"{request.url.scheme}://{request.host}/elsewhere?auth={authorization}"
        return web.Response(status=301, headers={"Location": location}, text="moved")
    if mode.startswith("status-"):
        return web.Response(status=int(mode.removeprefix("status-")), text="no")
    raise web.HTTPInternalServerError()


async def elsewhere(request: web.Request) -> web.Response:
    request.app[HITS]["count"] += 1
    return web.json_response(GUIDE_SUCCESS)


async def hits(request: web.Request) -> web.Response:
    return web.json_response({"hits": request.app[HITS]["count"]})


def make_app(mode: str) -> web.Application:
    app = web.Application()
    app[MODE] = mode
    app[HITS] = {"count": 0}
    app.router.add_post("/v1.0/appkeys/{key}/vehicle-plate", handle)
    app.router.add_route("*", "/elsewhere", elsewhere)
    app.router.add_get("/_hits", hits)
    return app


async def start(mode: str, tls: ssl.SSLContext | None = None) -> tuple[web.AppRunner, str]:
    """Serve MODE on 127.0.0.1 (over TLS with `tls`); the runner to clean up, and the URL."""
    runner = web.AppRunner(make_app(mode))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"{'https' if tls else 'http'}://127.0.0.1:{port}"


def server_tls(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def main(mode: str, options: list[str]) -> None:
    tls = server_tls(options[1], options[2]) if options[:1] == ["--tls"] else None
    _runner, url = await start(mode, tls)
    print(json.dumps({"url": url}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
