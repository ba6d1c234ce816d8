"""What an answer means: the one home of SPEC's result-code table.

Every call ends in a code: NHN's `resultCode` as text (`"0"`, `"4000201"`), `http_NNN` for a
status other than 200, or a transport reason (`timeout`, `connection_refused`, `tls`, ...).
`judge(code)` turns it into one `Verdict`, which pacing, the breaker, the retry policy and the
store read; no other module matches code strings.

To add a result code: one row in `RESULT_CODES` (README's failure table is checked against it
by tests/integration/test_docs.py).
"""

from __future__ import annotations

from enum import StrEnum


class Verdict(StrEnum):
    """What one answer means for the item and for the run."""

    DONE = "done"  # recognized: the item is done with its plates
    NO_PLATE = "no_plate"  # recognized, no plate read: done, no plate rows, the code kept
    RETRY = "retry"  # transient trouble with this call: try the item again later
    THROTTLE = "throttle"  # the API's call limit: the whole pool slows down; the image did no wrong
    OUTAGE = "outage"  # the API looks unreachable: retried, and counted by the breaker
    PERMANENT = "permanent"  # the image can never succeed: failed with the code
    FATAL = "fatal"  # no call can succeed: stop the run, items stay pending
    UNKNOWN = "unknown"  # an undocumented code: retried a few times, then failed

    @property
    def recognized(self) -> bool:
        """The call bought a recognition (with or without a plate): the item is done."""
        return self in (Verdict.DONE, Verdict.NO_PLATE)

    @property
    def retried(self) -> bool:
        """The item is tried again later, counting against its attempts."""
        return self in (Verdict.RETRY, Verdict.OUTAGE, Verdict.UNKNOWN)


V = Verdict

# NHN's error-code table for the vehicle-plate endpoint (shared/nhn-vehicle-plate-error-codes.md)
# and what the pipeline does with each code (SPEC.md).
RESULT_CODES: dict[int, tuple[str, Verdict]] = {
    0: ("SUCCESS", V.DONE),
    -1: ("FAIL", V.RETRY),
    400: ("BAD_REQUEST", V.PERMANENT),
    401: ("UNAUTHORIZED", V.FATAL),
    403: ("FORBIDDEN", V.FATAL),
    404: ("NOT_FOUND", V.FATAL),
    405: ("METHOD_NOT_ALLOWED", V.FATAL),
    415: ("UNSUPPORTED_MEDIA_TYPE", V.PERMANENT),
    4000001: ("INVALID_PARAMETER", V.PERMANENT),
    4000002: ("INVALID_FILE", V.PERMANENT),
    4000003: ("INVALID_FILE_TYPE", V.PERMANENT),
    4000004: ("UPLOADED_FILE_IS_EMPTY", V.PERMANENT),
    4000005: ("MISSING_REQUIRED_HEADER", V.FATAL),
    4000006: ("API_CALL_LIMIT_EXCEEDED", V.THROTTLE),
    4000201: ("VEHICLE_PLATE_NOT_FOUND", V.NO_PLATE),
    4000401: ("SERVICE_NOT_ENABLED", V.FATAL),
    4010001: ("INVALID_APPKEY_SECRETKEY", V.FATAL),
    4010002: ("INVALID_UUID", V.FATAL),
    4010003: ("NOT_ALLOWED_USER", V.FATAL),
    4010004: ("INVALID_PROJECT", V.FATAL),
    4010005: ("UNAUTHORIZED_ROLE", V.FATAL),
    4131000: ("MAX_UPLOAD_SIZE_EXCEEDED", V.PERMANENT),
    5000001: ("INTERNAL_API_FAIL", V.RETRY),
    5000002: ("ERROR_PARSING_FAIL", V.RETRY),
    5000003: ("DATABASE_FAIL", V.RETRY),
    5000004: ("RESOURCE_DELETE_FAIL", V.RETRY),
    5000005: ("FILE_READ_FAIL", V.RETRY),
    # NHN answers this when its upstream rate-limits the call: a call limit like 4000006.
    5000503: ("API_TEMPORARILY_UNAVAILABLE", V.THROTTLE),
    5004001: ("OCR_VEHICLE_PLATE_API_FAIL", V.RETRY),
    5004002: ("OCR_VEHICLE_PLATE_API_RETURN_EMPTY", V.RETRY),
    # A plate was seen but not read: a result, kept for review, never paid for again.
    5004003: ("OCR_VEHICLE_PLATE_RECOGNITION_FAIL", V.NO_PLATE),
}
SERVER_FAILURES = range(5_000_000, 6_000_000)  # any other 5xxxxxx: a server-side failure

# An HTTP status other than 200, from the endpoint or a gateway before it.
HTTP_STATUSES: dict[int, Verdict] = {
    401: V.FATAL,  # keys rejected by a gateway: every call would fail alike
    403: V.FATAL,
    404: V.FATAL,  # a wrong endpoint
    405: V.FATAL,
    407: V.FATAL,  # a proxy wants credentials we do not have
    408: V.OUTAGE,
    413: V.PERMANENT,
    429: V.THROTTLE,
    501: V.FATAL,  # nothing there implements the API
}

# What the client reports when no usable HTTP answer came back.
TRANSPORT: dict[str, Verdict] = {
    "timeout": V.OUTAGE,
    "connection": V.OUTAGE,  # reset, closed, ...
    "connection_refused": V.OUTAGE,  # fatal before anything answered: the run decides
    "client_error": V.OUTAGE,
    "bad_response": V.RETRY,  # a body that is not the API's JSON, or over the size cap
    "redirect": V.FATAL,  # never followed: the line names where it points
    "tls": V.FATAL,  # the certificate does not verify (see --ca-bundle)
    "unknown_host": V.FATAL,
}


def judge(code: str) -> Verdict:
    """The verdict for a call's code (see the module docstring for the forms a code takes)."""
    verdict = TRANSPORT.get(code)
    if verdict is not None:
        return verdict
    if code.startswith("http_"):
        return of_http_status(int(code[5:])) if code[5:].isdigit() else V.UNKNOWN
    try:
        result_code = int(code)
    except ValueError:
        return V.UNKNOWN
    return of_result_code(result_code)


def of_result_code(code: int) -> Verdict:
    known = RESULT_CODES.get(code)
    if known is not None:
        return known[1]
    return V.RETRY if code in SERVER_FAILURES else V.UNKNOWN


def of_http_status(status: int) -> Verdict:
    if status in HTTP_STATUSES:
        return HTTP_STATUSES[status]
    if 300 <= status < 400:
        return V.FATAL  # a redirect: never followed
    return V.OUTAGE if status >= 500 else V.UNKNOWN


def is_refusal(code: str) -> bool:
    """Nothing listened at the endpoint: fatal when nothing has answered in the run yet (the
    run decides, after a grace), an outage once the API has answered."""
    return code == "connection_refused"


def result_key(code: str) -> str | None:
    """NHN's key for a result code (`VEHICLE_PLATE_NOT_FOUND`), for messages and README."""
    try:
        known = RESULT_CODES.get(int(code))
    except ValueError:
        return None
    return known[0] if known else None
