"""The emulator's aiohttp application: the endpoint, the order of its checks, its stats.

``decide()`` is the one place an answer is chosen, in the order the real service checks a call:
the ``Authorization`` header, the keys, the call limit (``faults``), the upload (``upload``,
whose image gets its answer from ``synthetic``), then an injected fault if one is drawn.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import random
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from aiohttp import web

from pipeline.emulator.answers import CALL_LIMIT_EXCEEDED, HEADERS_MISSING, INVALID_KEYS, Decision
from pipeline.emulator.faults import (
    DEFAULT_FAULT_KINDS,
    DEFAULT_SLOW_SECONDS,
    JSON_FAULT_CODES,
    LIMIT_CODES,
    SLOW,
    FaultInjector,
    SlidingWindowLimiter,
    fault_response,
)
from pipeline.emulator.stats import EmulatorStats
from pipeline.emulator.synthetic import (
    DEFAULT_MAX_PLATES,
    MAX_PLATES_LIMIT,
    NO_PLATE_BODIES,
    NO_PLATE_BODY_HEADER,
    NO_PLATE_SHARE,
)
from pipeline.emulator.upload import MAX_IMAGE_BYTES, answer_upload

# Above aiohttp's own limit would answer HTTP 413 before we can answer 4131000 like NHN does.
CLIENT_MAX_SIZE_BYTES = 4 * MAX_IMAGE_BYTES
# In-flight requests get this long to finish when the server stops.
SHUTDOWN_GRACE_SECONDS = 5.0
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8089
ENDPOINT_PATH = "/v1.0/appkeys/{appKey}/vehicle-plate"
STATS_PATH = "/_emulator/stats"

# Plates as readable Hangul, not \uXXXX escapes, for whoever looks with curl.
_dumps = functools.partial(json.dumps, ensure_ascii=False)
# Latency jitter is random on purpose; answers are not (they come from the image hash).
_latency_random = random.Random()

STATS_KEY = web.AppKey("platepipe_emulator_stats", EmulatorStats)


class _VehiclePlateEndpoint:
    def __init__(
        self,
        app_key: str,
        secret_key: str,
        *,
        latency: tuple[float, float],
        record: bool,
        limiter: SlidingWindowLimiter,
        limit_code: int,
        injector: FaultInjector,
        slow_seconds: float,
        plates: dict[str, Any],
        no_plate_body: str,
        locate: bool = False,
    ) -> None:
        self._app_key = app_key.encode("utf-8", "surrogateescape")
        self._secret_key = secret_key.encode("utf-8", "surrogateescape")
        self._latency = latency
        self._record = record
        self._limiter = limiter
        self._limit_code = limit_code
        self._injector = injector
        self._slow_seconds = slow_seconds
        self._plates = plates  # synthetic_result's options
        self._no_plate_body = no_plate_body
        self._locate = locate

    async def handle(self, request: web.Request) -> web.Response:
        stats = request.app[STATS_KEY]
        arrived = time.monotonic()
        stats.calls += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            decision = await self.decide(request, arrived)
            answer = decision.answer()
            stats.count(decision, answer, arrived)
            low, high = self._latency
            if high > 0:
                await asyncio.sleep(_latency_random.uniform(low, high))
            if answer is None:
                assert decision.fault is not None
                return fault_response(request, decision.fault)
            if decision.fault == SLOW:
                await asyncio.sleep(self._slow_seconds)
            return web.json_response(answer, dumps=_dumps)
        finally:
            stats.in_flight -= 1

    async def decide(self, request: web.Request, arrived: float) -> Decision:
        """The one place an answer is chosen, in the order the real service checks a call."""
        authorization = request.headers.get("Authorization")
        if authorization is None:
            return Decision(HEADERS_MISSING)
        url_key = request.match_info["appKey"].encode("utf-8", "surrogateescape")
        # Both comparisons always run, so timing does not tell which key was wrong.
        key_ok = hmac.compare_digest(url_key, self._app_key)
        secret_ok = hmac.compare_digest(
            authorization.encode("utf-8", "surrogateescape"), self._secret_key
        )
        if not (key_ok and secret_ok):
            return Decision(INVALID_KEYS)
        # Counted from arrival, as a gateway would, but the upload is still read: by_sha256
        # counts every call an image cost, refused or faulted.
        admitted = self._limiter.admit(arrived)
        real = await answer_upload(
            request,
            record=self._record,
            plates=self._plates,
            no_plate_body=self._no_plate_body,
            locate=self._locate,
        )
        if not admitted:
            return replace(real, code=self._limit_code, result=None, rate_limited=True)
        fault = self._injector.pick()
        if fault is None or fault == SLOW:
            return replace(real, admitted=True, fault=fault)
        code = JSON_FAULT_CODES.get(fault)  # None for the faults that send no NHN answer
        return replace(real, code=code, result=None, admitted=True, fault=fault)


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS_KEY].to_json(), dumps=_dumps)


def make_app(
    app_key: str,
    secret_key: str,
    *,
    latency: tuple[float, float] = (0.0, 0.0),
    record: bool = False,
    fault_rate: float = 0.0,
    faults: str | Iterable[str] = DEFAULT_FAULT_KINDS,
    seed: int | None = None,
    slow_seconds: float = DEFAULT_SLOW_SECONDS,
    rate_limit: int = 0,
    limit_code: int = CALL_LIMIT_EXCEEDED,
    max_plates: int = DEFAULT_MAX_PLATES,
    no_plate_share: float = NO_PLATE_SHARE,
    no_plate_body: str = NO_PLATE_BODY_HEADER,
    locate_plates: bool = False,
) -> web.Application:
    """Build the emulator application; its accounting is ``app[STATS_KEY]``.

    ``fault_rate`` of the calls that pass the credential check get one of the ``faults`` kinds
    (see ``faults``) instead of their answer, drawn from ``random.Random(seed)``.
    ``rate_limit`` > 0 answers ``limit_code`` (4000006, or 5000503 as NHN's upstream does) to a
    call that would make more than that many admitted calls within one second. Both are off by
    default. ``no_plate_share`` and ``max_plates`` shape the answers (see ``synthetic_result``),
    ``no_plate_body`` the 4000201 ones (see ``NO_PLATE_BODIES``). ``locate_plates`` answers
    the box of a marker drawn in the picture instead (see ``locate``).
    """
    low, high = latency
    if not 0 <= low <= high:
        raise ValueError(f"latency must be 0 <= low <= high, got {latency!r}")
    if not slow_seconds >= 0:
        raise ValueError(f"slow_seconds must be >= 0, got {slow_seconds!r}")
    if limit_code not in LIMIT_CODES:
        raise ValueError(f"limit_code must be one of {LIMIT_CODES}, got {limit_code!r}")
    if not 1 <= max_plates <= MAX_PLATES_LIMIT:
        raise ValueError(f"max_plates must be 1..{MAX_PLATES_LIMIT}, got {max_plates!r}")
    if not 0 <= no_plate_share <= 1:
        raise ValueError(f"no_plate_share must be between 0 and 1, got {no_plate_share!r}")
    if no_plate_body not in NO_PLATE_BODIES:
        raise ValueError(f"no_plate_body must be one of {NO_PLATE_BODIES}, got {no_plate_body!r}")
    app = web.Application(client_max_size=CLIENT_MAX_SIZE_BYTES)
    app[STATS_KEY] = EmulatorStats(record=record)
    endpoint = _VehiclePlateEndpoint(
        app_key,
        secret_key,
        latency=(low, high),
        record=record,
        limiter=SlidingWindowLimiter(rate_limit),
        limit_code=limit_code,
        injector=FaultInjector(fault_rate, faults, seed),
        slow_seconds=slow_seconds,
        plates={"max_plates": max_plates, "no_plate_share": no_plate_share},
        no_plate_body=no_plate_body,
        locate=locate_plates,
    )
    app.router.add_post(ENDPOINT_PATH, endpoint.handle)
    app.router.add_get(STATS_PATH, _stats)
    return app


async def start_emulator(
    host: str = DEFAULT_HOST, port: int = 0, *, app_key: str, secret_key: str, **options: Any
) -> tuple[web.AppRunner, str]:
    """Serve the emulator in the running loop; return the runner (to ``cleanup()``) and base URL.

    ``options`` are ``make_app``'s keyword arguments: latency, record, fault_rate, faults, ...
    """
    app = make_app(app_key, secret_key, **options)
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_GRACE_SECONDS)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    url_host = f"[{host}]" if ":" in host else host
    return runner, f"http://{url_host}:{bound_port}"
