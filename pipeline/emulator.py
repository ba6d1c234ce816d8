"""A local server compatible with NHN Cloud's Vehicle Plate OCR API, for dry runs and tests.

It does NOT read plates in images. Every answer is synthetic, derived deterministically from the
sha256 of the uploaded bytes: the same file always gets the same plates, confidences and boxes.
The only thing read from the image is its width and height (with Pillow), to place the boxes
inside it and to compute ``resolution``.

It follows the real service where a client can tell the difference: the route, the
``Authorization`` header, the multipart field ``image``, HTTP 200 for every answer with the
``header`` envelope, the result codes and the order in which they are checked.

For chaos and rate tests it can also misbehave on purpose, off by default: replace a fraction of
answers with faults (gateway errors, dropped connections, bad JSON, slow answers, server-side
result codes) and refuse calls above a call limit. That logic lives in ``emulator_faults``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from io import BytesIO
from typing import Any

import click
from aiohttp import BodyPartReader, web
from PIL import JpegImagePlugin, PngImagePlugin

from pipeline.emulator_faults import (
    DEFAULT_SLOW_SECONDS,
    FAULT_KINDS,
    JSON_FAULT_CODES,
    SLOW,
    FaultInjector,
    PerSecondCounter,
    SlidingWindowLimiter,
    fault_options,
    fault_response,
)

MAX_IMAGE_BYTES = 5 * 1024 * 1024
# Room for the multipart boundaries and part headers around an image of exactly MAX_IMAGE_BYTES.
MULTIPART_ALLOWANCE_BYTES = 64 * 1024
# Above aiohttp's own limit would answer HTTP 413 before we can answer 4131000 like NHN does.
CLIENT_MAX_SIZE_BYTES = 4 * MAX_IMAGE_BYTES
READ_CHUNK_BYTES = 64 * 1024
# In-flight requests get this long to finish when the server stops.
SHUTDOWN_GRACE_SECONDS = 5.0
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8089
ENDPOINT_PATH = "/v1.0/appkeys/{appKey}/vehicle-plate"
STATS_PATH = "/_emulator/stats"

NORMAL_MIN_LONG_SIDE_PX = 1280
NORMAL_MIN_SHORT_SIDE_PX = 720
MAX_PLATES = 3
CONF_MIN, CONF_MAX = 0.30, 0.99
# A Korean plate is 520 x 110 mm.
PLATE_ASPECT = 520 / 110
PLATE_SYLLABLES = tuple("가나다라마거너더러머버서어저고노도로모보소오조구누두루무부수우주하허호배")

MAGIC_FILE_TYPES = {b"\xff\xd8\xff": "jpg", b"\x89PNG\r\n\x1a\n": "png"}
_HEADER_PARSERS = {"jpg": JpegImagePlugin.JpegImageFile, "png": PngImagePlugin.PngImageFile}
# Camera image headers (EXIF and thumbnail included) fit here and parse inline in ~30 us; only
# files whose size is not found in it are parsed again in full, in a thread.
HEADER_PREFIX_BYTES = 64 * 1024
# A file cut short has no end marker near its end, and the real service cannot decode it.
END_MARKERS = {"jpg": b"\xff\xd9", "png": b"IEND"}
END_MARKER_SEARCH_BYTES = 1024

SUCCESS = 0
UNKNOWN_ERROR = -1
INVALID_PARAMETER = 4000001
INVALID_FILE = 4000002
INVALID_FILE_TYPE = 4000003
EMPTY_FILE = 4000004
HEADERS_MISSING = 4000005
CALL_LIMIT_EXCEEDED = 4000006
INVALID_KEYS = 4010001
TOO_LARGE = 4131000
SERVER_ERROR = 5000001
RESULT_MESSAGES = {
    SUCCESS: "SUCCESS",
    UNKNOWN_ERROR: "unknown error",
    INVALID_PARAMETER: "invalid parameter",
    INVALID_FILE: "invalid file",
    INVALID_FILE_TYPE: "invalid file type",
    EMPTY_FILE: "uploaded file is empty",
    HEADERS_MISSING: "required headers missing",
    CALL_LIMIT_EXCEEDED: "API call limit exceeded",
    INVALID_KEYS: "invalid appKey or secretKey",
    TOO_LARGE: "request larger than 5 MB",
    SERVER_ERROR: "internal server error",
}

# Plates as readable Hangul, not \uXXXX escapes, for whoever looks with curl.
_dumps = functools.partial(json.dumps, ensure_ascii=False)
# Latency jitter is random on purpose; answers are not (they come from the image hash).
_latency_random = random.Random()


def synthetic_result(data: bytes, width: int, height: int, file_type: str) -> dict[str, Any]:
    """Return the ``result`` object for an image: 0..3 made-up plates, fixed by sha256(data)."""
    digest = hashlib.sha256(data).digest()
    count = digest[0] % (MAX_PLATES + 1)  # uniform over 0..3, so about a quarter have none
    w, h = max(width, 1), max(height, 1)
    values: list[dict[str, Any]] = []
    boxes: list[dict[str, int]] = []
    for index in range(count):
        # One independent 32-byte stream per plate keeps plates stable if MAX_PLATES changes.
        d = hashlib.sha256(digest + bytes([index])).digest()
        head = f"{d[1] % 100:02d}" if d[2] % 2 else f"{100 + int.from_bytes(d[1:3]) % 900}"
        syllable = PLATE_SYLLABLES[d[3] % len(PLATE_SYLLABLES)]
        tail = f"{int.from_bytes(d[4:6]) % 10000:04d}"
        conf = CONF_MIN + (CONF_MAX - CONF_MIN) * int.from_bytes(d[6:8]) / 0xFFFF
        values.append({"value": f"{head}{syllable}{tail}", "conf": round(conf, 4)})
        boxes.append(_plate_box(d, index, count, w, h))
    long_side, short_side = max(w, h), min(w, h)
    normal = long_side >= NORMAL_MIN_LONG_SIDE_PX and short_side >= NORMAL_MIN_SHORT_SIDE_PX
    return {
        "fileType": file_type,
        "values": values,
        "boxes": boxes,
        "resolution": "normal" if normal else "low",
    }


def _plate_box(d: bytes, index: int, count: int, w: int, h: int) -> dict[str, int]:
    # Each plate gets its own vertical strip of the image so that boxes never overlap.
    strip_px = w / count
    box_w = max(1, int(strip_px * (0.35 + 0.5 * d[8] / 255)))
    box_h = min(h - 1, max(1, round(box_w / PLATE_ASPECT)))
    x1 = int(index * strip_px + (strip_px - box_w) * d[9] / 255)
    y1 = int((h - 1 - box_h) * d[10] / 255)
    max_skew = box_h // 4  # a slight tilt, as a camera sees a plate
    skew = d[11] % (2 * max_skew + 1) - max_skew
    x2 = min(x1 + box_w, w - 1)

    def y(value: int) -> int:
        return min(max(value, 0), h - 1)

    # Clockwise from the top-left corner, as NHN numbers them.
    return dict(
        x1=x1, y1=y(y1), x2=x2, y2=y(y1 + skew),
        x3=x2, y3=y(y1 + box_h + skew), x4=x1, y4=y(y1 + box_h),
    )  # fmt: skip


@dataclass
class EmulatorStats:
    """Server-side accounting, so tests and benchmarks can check what the client really sent."""

    record: bool = False
    calls: int = 0  # every POST, whatever its answer
    in_flight: int = 0
    max_in_flight: int = 0
    # The resultCode of every NHN JSON answer, faults included; faults without one are in faults.
    by_code: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    # Calls past the credential check and the call limit, per whole second since make_app.
    admitted: PerSecondCounter = field(default_factory=lambda: PerSecondCounter(time.monotonic()))
    # Only filled when record=True: they grow with the number of distinct images.
    by_sha256: Counter[str] = field(default_factory=Counter)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def admitted_per_second(self) -> list[int]:
        """Oldest first, at most the last hour; the last entry is the second still running."""
        return self.admitted.counts(time.monotonic())

    def count(self, decision: _Decision, answer: dict[str, Any] | None, arrived: float) -> None:
        if answer is not None:
            self.by_code[answer["header"]["resultCode"]] += 1
        if decision.fault is not None:
            self.faults[decision.fault] += 1
        if decision.rate_limited:
            self.rate_limited += 1
        if decision.admitted:
            self.admitted.add(arrived)
        if self.record and decision.image_sha256 is not None:
            self.by_sha256[decision.image_sha256] += 1
            # Real answers are fixed by the image, so the last success is the only success; a
            # fault or a refusal must not stand in for it.
            if answer is not None and answer["header"]["isSuccessful"]:
                self.answers[decision.image_sha256] = answer

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "by_code": {str(code): n for code, n in sorted(self.by_code.items())},
            "faults": {kind: self.faults[kind] for kind in FAULT_KINDS if kind in self.faults},
            "rate_limited": self.rate_limited,
            "admitted_per_second": self.admitted_per_second,
            "record": self.record,
            "by_sha256": dict(self.by_sha256),
            "answers": self.answers,
        }


STATS_KEY = web.AppKey("platepipe_emulator_stats", EmulatorStats)


class _Rejected(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class _Decision:
    code: int | None  # None: a fault that sends no NHN answer at all
    result: dict[str, Any] | None = None
    image_sha256: str | None = None
    admitted: bool = False  # passed the credential check and the call limit
    rate_limited: bool = False
    fault: str | None = None  # replaces the answer, or for "slow" delays it

    def answer(self) -> dict[str, Any] | None:
        """The NHN JSON answer, or None when the wire gets something else."""
        if self.code is None:
            return None
        header = {
            "isSuccessful": self.code == SUCCESS,
            "resultCode": self.code,
            "resultMessage": RESULT_MESSAGES[self.code],
        }
        answer: dict[str, Any] = {"header": header}
        if self.result is not None:
            answer["result"] = self.result
        return answer


class _VehiclePlateEndpoint:
    def __init__(
        self,
        app_key: str,
        secret_key: str,
        *,
        latency: tuple[float, float],
        record: bool,
        limiter: SlidingWindowLimiter,
        injector: FaultInjector,
        slow_seconds: float,
    ) -> None:
        self._app_key = app_key.encode("utf-8", "surrogateescape")
        self._secret_key = secret_key.encode("utf-8", "surrogateescape")
        self._latency = latency
        self._record = record
        self._limiter = limiter
        self._injector = injector
        self._slow_seconds = slow_seconds

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

    async def decide(self, request: web.Request, arrived: float) -> _Decision:
        """The one place an answer is chosen, in the order the real service checks a call."""
        authorization = request.headers.get("Authorization")
        if authorization is None:
            return _Decision(HEADERS_MISSING)
        url_key = request.match_info["appKey"].encode("utf-8", "surrogateescape")
        # Both comparisons always run, so timing does not tell which key was wrong.
        key_ok = hmac.compare_digest(url_key, self._app_key)
        secret_ok = hmac.compare_digest(
            authorization.encode("utf-8", "surrogateescape"), self._secret_key
        )
        if not (key_ok and secret_ok):
            return _Decision(INVALID_KEYS)
        # Counted from arrival, as a gateway would, but the upload is still read: by_sha256
        # counts every call an image cost, refused or faulted.
        admitted = self._limiter.admit(arrived)
        real = await self._answer_upload(request)
        if not admitted:
            return replace(real, code=CALL_LIMIT_EXCEEDED, result=None, rate_limited=True)
        fault = self._injector.pick()
        if fault is None or fault == SLOW:
            return replace(real, admitted=True, fault=fault)
        code = JSON_FAULT_CODES.get(fault)  # None for the faults that send no NHN answer
        return replace(real, code=code, result=None, admitted=True, fault=fault)

    async def _answer_upload(self, request: web.Request) -> _Decision:
        """The real service's answer to the upload, once the credentials are known to be good."""
        length = request.content_length
        if length is not None and length > MAX_IMAGE_BYTES + MULTIPART_ALLOWANCE_BYTES:
            return _Decision(TOO_LARGE)
        try:
            data = await _read_image_field(request)
        except _Rejected as rejected:
            return _Decision(rejected.code)
        # Hashed twice on success when recording; not at all when not (benchmarks).
        sha = hashlib.sha256(data).hexdigest() if self._record else None
        if not data:
            return _Decision(EMPTY_FILE, image_sha256=sha)
        file_type = next(
            (t for magic, t in MAGIC_FILE_TYPES.items() if data.startswith(magic)), None
        )
        if file_type is None:
            return _Decision(INVALID_FILE_TYPE, image_sha256=sha)
        if END_MARKERS[file_type] not in data[-END_MARKER_SEARCH_BYTES:]:
            return _Decision(INVALID_FILE, image_sha256=sha)
        size = _read_size(data[:HEADER_PREFIX_BYTES], file_type)
        if size is None and len(data) > HEADER_PREFIX_BYTES:
            # Pillow scans a damaged JPEG byte by byte (seconds for 5 MB): keep that off the loop.
            size = await asyncio.to_thread(_read_size, data, file_type)
        if size is None:
            return _Decision(INVALID_FILE, image_sha256=sha)
        return _Decision(SUCCESS, synthetic_result(data, *size, file_type), sha)


def _read_size(data: bytes, file_type: str) -> tuple[int, int] | None:
    try:
        # The plugin class parses the header only. Unlike Image.open it skips the
        # decompression-bomb check, which guards decoding pixels, and nothing is decoded here.
        with _HEADER_PARSERS[file_type](BytesIO(data)) as image:
            return image.size
    except Exception:  # Pillow raises many types for a damaged file; all mean "invalid file"
        return None


async def _read_image_field(request: web.Request) -> bytes:
    """Stream the multipart body and return the ``image`` part, never holding more than the cap."""
    # Checked here because aiohttp's reader asserts (not raises) on a non-multipart body.
    if not request.content_type.startswith("multipart/"):
        raise _Rejected(INVALID_PARAMETER)
    try:
        reader = await request.multipart()
        async for part in reader:  # advancing discards the unread parts we skip
            if isinstance(part, BodyPartReader) and part.name == "image":
                data = bytearray()
                while chunk := await part.read_chunk(READ_CHUNK_BYTES):
                    data += chunk
                    if len(data) > MAX_IMAGE_BYTES:
                        raise _Rejected(TOO_LARGE)
                return bytes(data)
    except ValueError as exc:  # malformed multipart: bad boundary, bad part headers
        raise _Rejected(INVALID_PARAMETER) from exc
    raise _Rejected(INVALID_PARAMETER)


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS_KEY].to_json(), dumps=_dumps)


def make_app(
    app_key: str,
    secret_key: str,
    *,
    latency: tuple[float, float] = (0.0, 0.0),
    record: bool = False,
    fault_rate: float = 0.0,
    faults: str | Iterable[str] = FAULT_KINDS,
    seed: int | None = None,
    slow_seconds: float = DEFAULT_SLOW_SECONDS,
    rate_limit: int = 0,
) -> web.Application:
    """Build the emulator application; its accounting is ``app[STATS_KEY]``.

    ``fault_rate`` of the calls that pass the credential check get one of the ``faults`` kinds
    (see ``emulator_faults``) instead of their answer, drawn from ``random.Random(seed)``.
    ``rate_limit`` > 0 answers 4000006 to a call that would make more than that many admitted
    calls within one second. Both are off by default.
    """
    low, high = latency
    if not 0 <= low <= high:
        raise ValueError(f"latency must be 0 <= low <= high, got {latency!r}")
    if not slow_seconds >= 0:
        raise ValueError(f"slow_seconds must be >= 0, got {slow_seconds!r}")
    app = web.Application(client_max_size=CLIENT_MAX_SIZE_BYTES)
    app[STATS_KEY] = EmulatorStats(record=record)
    endpoint = _VehiclePlateEndpoint(
        app_key,
        secret_key,
        latency=(low, high),
        record=record,
        limiter=SlidingWindowLimiter(rate_limit),
        injector=FaultInjector(fault_rate, faults, seed),
        slow_seconds=slow_seconds,
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


def _parse_latency(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, float]:
    low_text, sep, high_text = value.partition("-")
    try:
        low = float(low_text)
        high = float(high_text) if sep else low
    except ValueError:
        raise click.BadParameter(f"expected seconds like 0.1 or 0.05-0.15, got {value!r}") from None
    if not 0 <= low <= high:
        raise click.BadParameter(f"expected 0 <= low <= high, got {value!r}")
    return low, high


async def _serve(host: str, port: int, app_options: dict[str, Any]) -> None:
    try:
        runner, url = await start_emulator(host, port, **app_options)
    except OSError as exc:  # address in use, unknown host
        # asyncio's bind message repeats the address; the errno text alone reads better.
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or exc
        raise click.ClickException(f"cannot listen on {host}:{port}: {reason}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows has no loop signal handlers
            loop.add_signal_handler(signum, stop.set)
    click.echo(f"platepipe emulator listening on {url}")  # click.echo flushes
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


@click.command("emulator")
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on; 0 picks any free port.",
)
@click.option(
    "--app-key",
    envvar="NHN_OCR_APP_KEY",
    default="demo-app-key",
    show_default=True,
    show_envvar=True,
    help="appKey expected in the URL.",
)
@click.option(
    "--secret-key",
    envvar="NHN_OCR_SECRET_KEY",
    default="demo-secret-key",
    # The default is the emulator's fixed test secret, published in README, so it is shown.
    # Help shows defaults only, never what the environment holds: a real key stays unseen.
    show_default=True,
    show_envvar=True,
    help="secretKey expected in the Authorization header.",
)
@click.option(
    "--latency",
    default="0",
    show_default=True,
    callback=_parse_latency,
    help="Seconds to wait before each answer: a fixed 0.1 or a uniform range 0.05-0.15.",
)
@click.option(
    "--record/--no-record",
    default=False,
    show_default=True,
    help="Keep per-image call counts and last answers (GET /_emulator/stats).",
)
@fault_options
def emulator_command(
    host: str,
    port: int,
    app_key: str,
    secret_key: str,
    latency: tuple[float, float],
    record: bool,
    **fault_options: Any,
) -> None:
    """Serve the NHN Vehicle Plate OCR endpoint locally, for dry runs and tests.

    It does not read images: the plates it returns are synthetic, derived from the image bytes
    (the same file always gets the same answer). Only the image size is read, for the boxes and
    the resolution. Counters are at GET /_emulator/stats.

    For chaos and rate tests it can misbehave on purpose: --fault-rate replaces that fraction
    of answers with faults, --rate-limit refuses calls above a call limit as NHN does.

    \b
    Examples:
        platepipe emulator --port 8089 --latency 0.05-0.15
        curl -X POST http://127.0.0.1:8089/v1.0/appkeys/demo-app-key/vehicle-plate \\
            -F 'image=@sample.png' -H 'Authorization: demo-secret-key'
        platepipe emulator --fault-rate 0.25 --rate-limit 40 --latency 0.05-0.15
        platepipe emulator --fault-rate 0.1 --faults http_502,drop,slow --slow-seconds 30 --seed 7
    """
    app_options = dict(
        app_key=app_key, secret_key=secret_key, latency=latency, record=record, **fault_options
    )
    asyncio.run(_serve(host, port, app_options))
