"""Fault injection and a call limit for the emulator, for chaos and rate tests of the pipeline.

The emulator's ``decide()`` (in ``app``) asks two questions here, after the credentials are
checked (a wrong key is never disguised as a fault or a refusal):

- ``SlidingWindowLimiter.admit(now)``: is this call within the limit of N calls in the last
  second? A refused call is answered like the real service does when its limit is exceeded:
  HTTP 200 with resultCode 4000006 (or, with ``limit_code``, 5000503
  API_TEMPORARILY_UNAVAILABLE, what NHN answers when its own upstream limits it), and it does
  not count toward the window.
- ``FaultInjector.pick()``: does a fault replace this admitted call's answer, and which kind?

A fault is one of these kinds (``FAULT_KINDS``):

    5000001, -1, 4000006,  the NHN JSON envelope, HTTP 200, isSuccessful false, that resultCode
    5000503, 5004001,      and NHN's resultMessage for it, no ``result``
    5004002, and the
    FINAL_FAULT_CODES
    http_502, http_503     a bare gateway error page
    http_429               a gateway's "too many requests" with Retry-After: 1
    bad_json               HTTP 200 whose body is cut-off JSON
    drop                   the connection is closed without any answer
    slow                   the real answer, but only after ``slow_seconds``

Without a choice, every kind but the ``FINAL_FAULT_CODES`` is drawn (``DEFAULT_FAULT_KINDS``):
5004003 (a plate seen but not read) is a final answer for the image, and the fatal codes
(4010002, 403, ...) end a run, so a chaos run must not get them by chance; a test names them.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable

from aiohttp import web

# Codes that end an image or the whole run whatever comes next: drawn only when named.
FINAL_FAULT_CODES = (
    "5004003",  # a plate seen but not read: a final answer for the image
    *("4000005", "4000401", "4010002", "4010003", "4010004", "4010005"),  # fatal for a run
    *("401", "403", "404", "405"),  # fatal as resultCodes too
    *("400", "415"),  # permanent for the image
)
JSON_FAULT_CODES = {
    code: int(code)
    for code in ("5000001", "-1", "4000006", "5000503", "5004001", "5004002", *FINAL_FAULT_CODES)
}
# What a call past the rate limit is answered: API_CALL_LIMIT_EXCEEDED, or
# API_TEMPORARILY_UNAVAILABLE as NHN answers when its upstream rate-limits.
LIMIT_CODES = (4000006, 5000503)
DROP = "drop"
SLOW = "slow"
BAD_JSON = "bad_json"
_GATEWAY_PAGES = {
    "http_502": (502, "Bad Gateway"),
    "http_503": (503, "Service Temporarily Unavailable"),
    "http_429": (429, "Too Many Requests"),
}
FAULT_KINDS = (*JSON_FAULT_CODES, *_GATEWAY_PAGES, BAD_JSON, DROP, SLOW)
DEFAULT_FAULT_KINDS = tuple(kind for kind in FAULT_KINDS if kind not in FINAL_FAULT_CODES)

DEFAULT_SLOW_SECONDS = 5.0
RETRY_AFTER_SECONDS = 1
RATE_WINDOW_SECONDS = 1.0
# What a proxy passes on when the upstream dies mid-answer.
TRUNCATED_JSON_BODY = '{"header": {"isSucc'


def parse_fault_kinds(kinds: str | Iterable[str]) -> tuple[str, ...]:
    """``"http_502, drop"`` or ``["http_502", "drop"]`` -> ``("http_502", "drop")``.

    Raises ValueError for an unknown kind or an empty list.
    """
    names = kinds.split(",") if isinstance(kinds, str) else kinds
    parsed = tuple(dict.fromkeys(name.strip() for name in names))
    unknown = [name for name in parsed if name not in FAULT_KINDS]
    if unknown:
        raise ValueError(
            f"unknown fault kind {', '.join(map(repr, unknown))}; known: {','.join(FAULT_KINDS)}"
        )
    if not parsed:
        raise ValueError(f"no fault kinds given; known: {','.join(FAULT_KINDS)}")
    return parsed


class FaultInjector:
    """Chooses per call whether a fault replaces the answer; reproducible with a seed."""

    def __init__(
        self,
        rate: float = 0.0,
        kinds: str | Iterable[str] = DEFAULT_FAULT_KINDS,
        seed: int | None = None,
    ) -> None:
        if not 0 <= rate <= 1:
            raise ValueError(f"fault rate must be between 0 and 1, got {rate!r}")
        self.rate = rate
        self.kinds = parse_fault_kinds(kinds)
        # Seeded, the n-th call to reach pick() always gets the same fate. Which call is n-th
        # depends on how the client schedules concurrent calls.
        self._random = random.Random(seed)

    def pick(self) -> str | None:
        """The fault kind for this call, or None for the real answer."""
        if self.rate == 0 or self._random.random() >= self.rate:
            return None
        return self._random.choice(self.kinds)


class SlidingWindowLimiter:
    """At most ``limit`` admitted calls in any window of ``window_seconds``; 0 means no limit."""

    def __init__(self, limit: int = 0, window_seconds: float = RATE_WINDOW_SECONDS) -> None:
        if limit < 0:
            raise ValueError(f"rate limit must be >= 0, got {limit!r}")
        self.limit = limit
        self._window_seconds = window_seconds
        self._admitted_at: deque[float] = deque()

    def admit(self, now: float) -> bool:
        """Admit a call arriving at ``now`` (time.monotonic()) or refuse it; refusals not kept."""
        if self.limit == 0:
            return True
        while self._admitted_at and now - self._admitted_at[0] >= self._window_seconds:
            self._admitted_at.popleft()
        if len(self._admitted_at) >= self.limit:
            return False
        self._admitted_at.append(now)
        return True


def fault_response(request: web.Request, kind: str) -> web.Response:
    """The answer for a fault that sends no NHN JSON: a gateway page, bad JSON, or nothing."""
    if kind == DROP:
        # With the transport closed, aiohttp's write fails with ConnectionResetError, which it
        # treats as the client having gone: no answer at all, no error logged.
        if request.transport is not None:
            request.transport.close()
        return web.Response()
    if kind == BAD_JSON:
        return web.Response(text=TRUNCATED_JSON_BODY, content_type="application/json")
    status, reason = _GATEWAY_PAGES[kind]
    page = (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n"
        f"<body>\r\n<center><h1>{status} {reason}</h1></center>\r\n</body>\r\n</html>\r\n"
    )
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 429 else None
    return web.Response(status=status, text=page, content_type="text/html", headers=headers)
