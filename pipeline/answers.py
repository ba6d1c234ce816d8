"""What the API said, made safe: one HTTP answer parsed into an `Answer`, its texts scrubbed.

Pure and total: `parse_answer` never raises, whatever the body, so every odd answer can be
unit-tested without a socket. Types and ranges are checked (a resultCode that is not a JSON
integer is a `bad_response`; a conf outside [0, 1] is NULL; a box that is not integers is
dropped), nesting is bounded, and no text that leaves it can carry the secret key, a control
character or a lone surrogate. What each code means is pipeline/verdicts.py's.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pipeline.config import Secret
from pipeline.records import Answer, Plate, Recognition
from pipeline.verdicts import Verdict, judge, of_result_code

BOX_KEYS = ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4")
MESSAGE_MAX_CHARS = 500
PLATE_VALUE_MAX_CHARS = 64
JSON_MAX_DEPTH = 32  # the API's answers nest 4 levels deep
RESULT_CODE_MAX = 2**63 - 1
SNIPPET_CHARS = 200
LOCATION_MAX_CHARS = 200
SNIPPET_SCAN_BYTES = 4096  # decoded and scrubbed before the snippet is cut from it

# What to check when a status means that no call can succeed (verdicts.py says which do).
FATAL_HTTP_HINTS = {
    401: "check the keys (NHN_OCR_APP_KEY, NHN_OCR_SECRET_KEY) and --endpoint",
    403: "check the keys (NHN_OCR_APP_KEY, NHN_OCR_SECRET_KEY) and --endpoint",
    404: "no vehicle-plate API at this URL; check --endpoint",
    405: "no vehicle-plate API at this URL; check --endpoint",
    407: "a proxy between here and the API wants credentials",
    501: "the server does not implement this API; check --endpoint",
}


def parse_answer(
    http_status: int,
    body: bytes,
    latency_s: float,
    retry_after: str | None = None,
    *,
    location: str | None = None,
    secret: Secret | None = None,
) -> Answer:
    """Turn one HTTP answer into an `Answer`; pure, so every odd body can be unit-tested.

    Total: whatever the body, it returns an Answer and never raises. Every text in it is
    storable (no control characters, no lone surrogates) and free of `secret`.
    """
    scrub = Scrubber(secret)
    if 300 <= http_status < 400:
        where = scrub.line(location or "", LOCATION_MAX_CHARS) or "nowhere (no Location header)"
        message = (
            f"the endpoint redirects (HTTP {http_status}) to {where}; redirects are never "
            "followed: set --endpoint to the URL that answers"
        )
        return Answer("redirect", message, latency_s, http_status)
    if http_status != 200:
        code = f"http_{http_status}"
        message = scrub.snippet(body)
        if judge(code) is Verdict.FATAL:
            hint = FATAL_HTTP_HINTS.get(http_status, "check --endpoint and the keys")
            message = f"the endpoint answered HTTP {http_status}: {hint}"
        return Answer(code, message, latency_s, http_status, None, _seconds(retry_after))
    try:
        doc = _load(body)
        header = doc.get("header") if isinstance(doc, dict) else None
        if not isinstance(header, dict):
            raise Unusable("no header object")
        result_code = _result_code(header.get("resultCode"))
        message = scrub.line(_string(header.get("resultMessage")), MESSAGE_MAX_CHARS) or ""
        verdict = of_result_code(result_code)
        if verdict is Verdict.NO_PLATE:
            # A result without a plate: kept as a recognition (whatever `result` it carries
            # besides), so SQL tells a plate-less image from one never sent.
            result = doc.get("result") if isinstance(doc.get("result"), dict) else {}
            recognition = _parse_result(
                {**result, "values": [], "boxes": []}, body, scrub, result_code
            )
            return Answer(str(result_code), message, latency_s, http_status, recognition)
        if verdict is not Verdict.DONE:
            return Answer(str(result_code), message, latency_s, http_status)
        recognition = _parse_result(doc.get("result"), body, scrub)
    except (Unusable, ValueError, RecursionError) as exc:
        # ValueError: not JSON (JSONDecodeError, UnicodeDecodeError, an int past 4300 digits).
        # RecursionError only if _too_deep let something through: the answer is still total.
        reason = str(exc) if isinstance(exc, Unusable) else type(exc).__name__
        return bad_response(reason, body, latency_s, http_status, scrub)
    return Answer("0", message, latency_s, http_status, recognition)


def bad_response(
    reason: str, body: bytes, latency_s: float, http_status: int, scrub: Scrubber
) -> Answer:
    """A retryable answer for a body that is not the API's: the reason and the body's start."""
    snippet = scrub.snippet(body)
    message = f"not the API's answer ({scrub.line(reason)})" + (f": {snippet}" if snippet else "")
    return Answer("bad_response", message, latency_s, http_status)


class Unusable(ValueError):
    """A body that is not the API's answer; the text says what is wrong, never what it held."""


def _load(body: bytes) -> Any:
    if _too_deep(body):
        raise Unusable(f"JSON nested deeper than {JSON_MAX_DEPTH} levels")
    return json.loads(body)


# The JSON strings of a body, to count the brackets outside them: a possessive pattern, linear.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENING = frozenset(b"[{")


def _too_deep(body: bytes) -> bool:
    """Whether `body` nests deeper than JSON_MAX_DEPTH: json.loads recurses once per level
    and a few thousand levels raise RecursionError; checked without recursing."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = 0
    for bracket in brackets:
        depth += 1 if bracket in _OPENING else -1
        if depth > JSON_MAX_DEPTH:
            return True
    return False


def _result_code(value: Any) -> int:
    # NHN documents an Integer. A quoted "0", 0.5, true or 1e308 is some other server talking:
    # taking "0" for success would store a result that the API never gave.
    if type(value) is not int or abs(value) > RESULT_CODE_MAX:
        raise Unusable(f"resultCode is {_kind_of(value)}, not an integer")
    return value


def _parse_result(result: Any, body: bytes, scrub: Scrubber, result_code: int = 0) -> Recognition:
    if not isinstance(result, dict):
        raise Unusable(f"a success whose result is {_kind_of(result)}, not an object")
    values = _list(result, "values")
    boxes = _list(result, "boxes")
    if not all(isinstance(v, dict) for v in values):
        raise Unusable("a value that is not an object")
    # values[i] belongs to boxes[i]. A value without a box is kept without coordinates; a box
    # without a value reads nothing and stays only in the raw response.
    plates = tuple(
        Plate(
            value=scrub.line(_string(v.get("value")), PLATE_VALUE_MAX_CHARS),
            conf=_conf(v.get("conf")),
            box=_box(boxes[i]) if i < len(boxes) else None,
        )
        for i, v in enumerate(values)
    )
    return Recognition(
        file_type=scrub.line(_string(result.get("fileType")), 8),
        resolution=scrub.line(_string(result.get("resolution")), 16),
        plates=plates,
        raw=scrub.raw(body),
        result_code=result_code,
    )


def _list(result: dict[str, Any], key: str) -> list[Any]:
    value = result.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise Unusable(f"{key} is {_kind_of(value)}, not a list")
    return value


def _kind_of(value: Any) -> str:
    return "missing" if value is None else f"a {type(value).__name__}"


def _string(value: Any) -> str | None:
    """Text fields are JSON strings; anything else (a number, a list) is not taken as text."""
    return value if isinstance(value, str) else None


def _conf(value: Any) -> float | None:
    """A confidence is a JSON number in [0, 1]. Anything else ("0.93", 5.0, -1, 1e308, true)
    is stored as NULL: the plate text is still a read worth keeping, the raw answer shows what
    came, and a retry would pay for the same answer again."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value <= 1 else None  # NaN compares false


def _box(box: Any) -> tuple[int, int, int, int, int, int, int, int] | None:
    """Eight integer coordinates within int32, or no box: a fractional, textual or missing
    coordinate leaves the plate without a box (its text is kept). 340.0 counts as 340."""
    if not isinstance(box, dict):
        return None
    corners = []
    for key in BOX_KEYS:
        c = box.get(key)
        if isinstance(c, float) and c.is_integer():
            c = int(c)
        if type(c) is not int or abs(c) > INT32_MAX:
            return None
        corners.append(c)
    return tuple(corners)  # type: ignore[return-value]


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After in seconds; its HTTP-date form is rare enough from gateways to ignore."""
    try:
        seconds = float(retry_after) if retry_after else None
    except ValueError:
        return None
    return max(seconds, 0.0) if seconds is not None and math.isfinite(seconds) else None


# Whatever a server sends must be storable and safe to show: no NUL (PostgreSQL text refuses
# it), no other control characters, no lone surrogates (`"\ud800"` in JSON decodes to one, and
# SQLite's UTF-8 encoding raises on it), lengths within the columns, numbers within their types.
_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_LINE_BREAKS = re.compile(r"[\t\n\r]+")
# In JSON text: an escaped backslash (skipped whole, so `\\ud800` stays the text it is), a
# surrogate pair (kept), or a lone surrogate's or a NUL's escape (defused).
_HURTFUL_ESCAPE = re.compile(
    r"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    r"|(\\u[dD][89a-fA-F][0-9a-fA-F]{2}|\\u0000)"
)


def _defuse_escape(match: re.Match[str]) -> str:
    return "\\ufffd" if match.group(1) else match.group(0)


INT32_MAX = 2**31 - 1


class Scrubber:
    """Makes a server's text storable and free of the secret key, in that order: the secret is
    replaced before a text is cut, so no prefix of it survives a cut."""

    def __init__(self, secret: Secret | None) -> None:
        self._secret = secret or Secret("")

    def raw(self, body: bytes) -> str:
        """The body as text, its line breaks kept. It stays the JSON it was, but an escape
        that would decode to a lone surrogate or a NUL reads `\\ufffd` instead: whoever parses
        the stored text again (or casts it to PostgreSQL's jsonb) gets storable text too."""
        text = _UNSAFE.sub("", body.decode("utf-8", errors="replace"))
        return self._redact(_HURTFUL_ESCAPE.sub(_defuse_escape, text))

    def line(self, text: str | None, max_chars: int = MESSAGE_MAX_CHARS) -> str | None:
        """One line of at most `max_chars`."""
        if text is None:
            return None
        text = _UNSAFE.sub("", _LINE_BREAKS.sub(" ", text))
        return self._redact(text)[:max_chars].strip()

    def snippet(self, body: bytes) -> str:
        """The start of a body, for a message."""
        text = body[:SNIPPET_SCAN_BYTES].decode("utf-8", errors="replace")
        return self.line(text, SNIPPET_CHARS) or ""

    def _redact(self, text: str) -> str:
        return self._secret.redact(text)
