"""`platepipe emulator`: the click command, its options and its serve loop.

The options are make_app's keyword arguments under their kebab-case names; the fault and limit
options are grouped in ``fault_options``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from typing import Any

import click

from pipeline.emulator.app import DEFAULT_HOST, DEFAULT_PORT, start_emulator
from pipeline.emulator.faults import (
    DEFAULT_FAULT_KINDS,
    DEFAULT_SLOW_SECONDS,
    LIMIT_CODES,
    parse_fault_kinds,
)
from pipeline.emulator.synthetic import (
    DEFAULT_MAX_PLATES,
    MAX_PLATES_LIMIT,
    NO_PLATE_BODIES,
    NO_PLATE_BODY_HEADER,
    NO_PLATE_SHARE,
)


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


def _parse_faults(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    try:
        return DEFAULT_FAULT_KINDS if value is None else parse_fault_kinds(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def fault_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The emulator command's fault and limit options; their names are make_app's arguments."""
    options = [
        click.option(
            "--fault-rate",
            type=click.FloatRange(0, 1),
            default=0.0,
            show_default=True,
            help="Fraction of calls with good keys that get a fault instead of their answer, "
            "e.g. --fault-rate 0.25.",
        ),
        click.option(
            "--faults",
            default=None,
            show_default="all but the final codes",
            callback=_parse_faults,
            help="Comma-separated fault kinds to pick from, e.g. --faults http_502,drop,slow. "
            "5000001, -1, 4000006, 5000503, 5004001, 5004002: that resultCode with NHN's "
            "message; final codes, drawn only when named: 5004003, 4000005, 4000401, "
            "4010002-4010005, 401, 403, 404, 405, 400, 415; http_502, http_503: a gateway "
            "error page; http_429: with Retry-After: 1; bad_json: cut-off JSON; drop: close "
            "the connection unanswered; slow: answer after --slow-seconds.",
        ),
        click.option(
            "--seed",
            type=int,
            default=None,
            show_default="random",
            help="Seed for the fault draws, to replay a sequence, e.g. --seed 7.",
        ),
        click.option(
            "--slow-seconds",
            type=click.FloatRange(min=0),
            default=DEFAULT_SLOW_SECONDS,
            show_default=True,
            help="How long a 'slow' fault holds its answer, e.g. --slow-seconds 30.",
        ),
        click.option(
            "--rate-limit",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Calls admitted per sliding second; more get resultCode 4000006 "
            "(API call limit exceeded) or --limit-code, e.g. --rate-limit 40. 0 is no limit.",
        ),
        click.option(
            "--limit-code",
            type=click.Choice([str(code) for code in LIMIT_CODES]),
            metavar="CODE",
            default=str(LIMIT_CODES[0]),
            show_default=True,
            callback=lambda ctx, param, value: int(value),
            help="resultCode for calls past --rate-limit: 4000006 (API_CALL_LIMIT_EXCEEDED) or "
            "5000503 (API_TEMPORARILY_UNAVAILABLE, NHN's upstream limiting), "
            "e.g. --limit-code 5000503.",
        ),
    ]
    for option in reversed(options):  # the first listed is the first in --help
        command = option(command)
    return command


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
    help="Seconds to wait before each answer: a fixed 0.1 or a uniform range, "
    "e.g. --latency 0.4-1.2.",
)
@click.option(
    "--no-plate-share",
    type=click.FloatRange(0, 1),
    metavar="SHARE",
    default=NO_PLATE_SHARE,
    show_default=True,
    help="Share of images answered 4000201 (VEHICLE_PLATE_NOT_FOUND) instead of a plate, chosen "
    "by their bytes so always the same images, e.g. --no-plate-share 0 for a plate on every one.",
)
@click.option(
    "--no-plate-body",
    type=click.Choice(NO_PLATE_BODIES),
    metavar="BODY",
    default=NO_PLATE_BODY_HEADER,
    show_default=True,
    help="A 4000201 answer's body: the header alone, as NHN's failures are, or also a result "
    "with fileType, resolution and empty values and boxes, e.g. --no-plate-body result.",
)
@click.option(
    "--max-plates",
    type=click.IntRange(1, MAX_PLATES_LIMIT),
    metavar="N",
    default=DEFAULT_MAX_PLATES,
    show_default=True,
    help="Plates per image with a plate: 1 as NHN answers, or 1 to N chosen by the bytes, to "
    "test the pairing of values[i] with boxes[i], e.g. --max-plates 3.",
)
@click.option(
    "--locate-plates",
    is_flag=True,
    default=False,
    help="Decode each picture and answer, as its plate's box, the rectangle drawn in it in the "
    "marker colour (255, 214, 0), in the sent picture's pixels (none: 4000201); for tests of box "
    "accuracy, e.g. of pictures fitted to 5 MB.",
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
    no_plate_share: float,
    no_plate_body: str,
    max_plates: int,
    locate_plates: bool,
    record: bool,
    **fault_options: Any,
) -> None:
    """Serve the NHN Vehicle Plate OCR endpoint locally, for dry runs and tests.

    It does not read images: the plates it returns are synthetic, derived from the image bytes
    (the same file always gets the same answer). Like NHN it answers one plate at most, and
    resultCode 4000201 (no plate found) for a share of images. Only the image size is read, for
    the boxes and the resolution (with --locate-plates, the box is that of a marker drawn in
    the picture, for tests of box accuracy). Counters are at GET /_emulator/stats.

    For chaos and rate tests it can misbehave on purpose: --fault-rate replaces that fraction
    of answers with faults, --rate-limit refuses calls above a call limit as NHN does (with
    4000006, or 5000503 given --limit-code 5000503).

    \b
    Examples:
        platepipe emulator --port 8089 --latency 0.05-0.15
        curl -X POST http://127.0.0.1:8089/v1.0/appkeys/demo-app-key/vehicle-plate \\
            -F 'image=@sample.png' -H 'Authorization: demo-secret-key'
        platepipe emulator --fault-rate 0.25 --rate-limit 40 --latency 0.05-0.15
        platepipe emulator --fault-rate 0.1 --faults http_502,drop,slow --slow-seconds 30 --seed 7
        platepipe emulator --rate-limit 20 --limit-code 5000503 --latency 0.4-1.2
        platepipe emulator --locate-plates
    """
    app_options = dict(
        app_key=app_key,
        secret_key=secret_key,
        latency=latency,
        no_plate_share=no_plate_share,
        no_plate_body=no_plate_body,
        max_plates=max_plates,
        locate_plates=locate_plates,
        record=record,
        **fault_options,
    )
    asyncio.run(_serve(host, port, app_options))
