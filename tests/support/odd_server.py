"""A misbehaving stand-in for the API, for what the emulator will not do: answers with
strange but possible content. Run: python -m tests.support.odd_server MODE (prints its URL).

Modes:
- odd-success: success with a long fileType, a coordinate past int32, NUL in a plate value
- garbage: HTTP 200 with a binary body
- echo-502: a gateway's 502 page that echoes the request's headers, secret included
- retry-after: HTTP 429 asking for an hour's pause
"""

from __future__ import annotations

import asyncio
import json
import sys

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


async def handle(request: web.Request) -> web.StreamResponse:
    await request.read()
    mode = request.app["mode"]
    if mode == "odd-success":
        return web.json_response(ODD_SUCCESS)
    if mode == "garbage":
        return web.Response(body=b"\x00\x01garbage\xff", content_type="application/json")
    if mode == "echo-502":
        headers = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
        return web.Response(status=502, text=f"<html>Bad Gateway\n{headers}</html>")
    if mode == "retry-after":
        return web.Response(status=429, headers={"Retry-After": "3600"}, text="slow down")
    raise web.HTTPInternalServerError()


async def main(mode: str) -> None:
    app = web.Application()
    app["mode"] = mode
    app.router.add_post("/v1.0/appkeys/{key}/vehicle-plate", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({"url": f"http://127.0.0.1:{port}"}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
