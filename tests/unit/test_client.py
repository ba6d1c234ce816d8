"""Unit tests of the NHN answer parsing and result-code classes (pipeline/client.py), and of the
`Secret` that keeps the secret key out of every printed text (pipeline/config.py)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from pipeline.client import MESSAGE_MAX_CHARS, NhnClient, parse_answer
from pipeline.config import ApiSettings, RunSettings, Secret
from pipeline.outcomes import Plate
from pipeline.verdicts import Verdict

SECRET_VALUE = "s3cr3t-KEY-value"
LATENCY_S = 0.25

# The success body from NHN's API guide, as the API sends it (UTF-8, Korean plate text).
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
GUIDE_BOX_TUPLE = (340, 3231, 523, 3231, 523, 3297, 340, 3297)
OTHER_BOX = {"x1": 1, "y1": 2, "x2": 3, "y2": 4, "x3": 5, "y3": 6, "x4": 7, "y4": 8}
OTHER_BOX_TUPLE = (1, 2, 3, 4, 5, 6, 7, 8)


def _header(code: Any = 0, message: str = "SUCCESS") -> dict[str, Any]:
    return {"isSuccessful": code == 0, "resultCode": code, "resultMessage": message}


def _success(values: list[Any], boxes: list[Any], **extra: Any) -> bytes:
    result = {"fileType": "png", "values": values, "boxes": boxes, "resolution": "normal", **extra}
    doc = {"header": _header(), "result": result}
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def _failure(code: Any, message: str) -> bytes:
    return json.dumps({"header": _header(code, message)}).encode("utf-8")


GUIDE_BODY = _success([{"value": "123가4567", "conf": 0.93}], [GUIDE_BOX])


# --- parse_answer: success ------------------------------------------------------------------


def test_guide_success_body_becomes_one_plate_with_its_box() -> None:
    answer = parse_answer(200, GUIDE_BODY, LATENCY_S)

    assert answer.verdict is Verdict.DONE
    assert answer.code == "0"
    assert answer.message == "SUCCESS"
    assert answer.latency_s == LATENCY_S
    assert answer.http_status == 200
    recognition = answer.recognition
    assert recognition is not None
    assert recognition.file_type == "png"
    assert recognition.resolution == "normal"
    assert recognition.plates == (Plate("123가4567", 0.93, GUIDE_BOX_TUPLE),)
    assert recognition.raw == GUIDE_BODY.decode("utf-8")


def test_values_are_paired_with_boxes_by_index() -> None:
    body = _success(
        [{"value": "11가1111", "conf": 0.9}, {"value": "22나2222", "conf": 0.8}],
        [GUIDE_BOX, OTHER_BOX],
    )

    plates = parse_answer(200, body, LATENCY_S).recognition.plates

    assert plates == (
        Plate("11가1111", 0.9, GUIDE_BOX_TUPLE),
        Plate("22나2222", 0.8, OTHER_BOX_TUPLE),
    )


def test_a_value_without_a_box_is_kept_without_coordinates() -> None:
    body = _success(
        [{"value": "11가1111", "conf": 0.9}, {"value": "22나2222", "conf": 0.8}], [GUIDE_BOX]
    )

    plates = parse_answer(200, body, LATENCY_S).recognition.plates

    assert plates == (Plate("11가1111", 0.9, GUIDE_BOX_TUPLE), Plate("22나2222", 0.8, None))


def test_boxes_without_a_value_are_dropped_but_stay_in_raw() -> None:
    body = _success([{"value": "11가1111", "conf": 0.9}], [GUIDE_BOX, OTHER_BOX])

    recognition = parse_answer(200, body, LATENCY_S).recognition

    assert recognition.plates == (Plate("11가1111", 0.9, GUIDE_BOX_TUPLE),)
    assert '"x1": 1,' in recognition.raw


@pytest.mark.parametrize(
    "box",
    [
        {k: v for k, v in GUIDE_BOX.items() if k != "y4"},
        {**GUIDE_BOX, "x3": None},
        {**GUIDE_BOX, "x2": "wide"},
        [340, 3231, 523, 3231, 523, 3297, 340, 3297],
        None,
    ],
    ids=["missing-key", "null-coordinate", "non-numeric", "list-not-object", "null-box"],
)
def test_an_unusable_box_becomes_none_and_the_value_is_kept(box: Any) -> None:
    body = _success([{"value": "11가1111", "conf": 0.9}], [box])

    answer = parse_answer(200, body, LATENCY_S)

    assert answer.verdict is Verdict.DONE
    assert answer.recognition.plates == (Plate("11가1111", 0.9, None),)


@pytest.mark.parametrize(
    "result",
    [
        {"fileType": "jpg", "values": [], "boxes": [], "resolution": "low"},
        {"fileType": "jpg", "resolution": "low"},
        {"fileType": "jpg", "values": None, "boxes": None, "resolution": "low"},
    ],
    ids=["empty-lists", "no-lists", "null-lists"],
)
def test_zero_plates_is_a_done_recognition(result: dict[str, Any]) -> None:
    body = json.dumps({"header": _header(), "result": result}).encode()

    answer = parse_answer(200, body, LATENCY_S)

    assert answer.verdict is Verdict.DONE
    assert answer.recognition.plates == ()
    assert answer.recognition.file_type == "jpg"
    assert answer.recognition.resolution == "low"


def test_a_value_with_null_text_and_conf_is_kept_as_none() -> None:
    body = _success([{"value": None, "conf": None}], [GUIDE_BOX])

    plates = parse_answer(200, body, LATENCY_S).recognition.plates

    assert plates == (Plate(None, None, GUIDE_BOX_TUPLE),)


# --- parse_answer: transport and malformed answers ------------------------------------------


@pytest.mark.parametrize("status", [502, 503, 429, 500, 504])
def test_gateway_status_is_retried_with_http_code(status: int) -> None:
    answer = parse_answer(status, b"<html>Bad Gateway</html>", LATENCY_S)

    assert answer.verdict is (Verdict.THROTTLE if status == 429 else Verdict.OUTAGE)
    assert answer.code == f"http_{status}"
    assert answer.http_status == status
    assert answer.recognition is None


def test_gateway_status_wins_even_over_a_success_body() -> None:
    answer = parse_answer(503, GUIDE_BODY, LATENCY_S)

    assert answer.verdict is Verdict.OUTAGE
    assert answer.code == "http_503"
    assert answer.recognition is None


@pytest.mark.parametrize(
    "body",
    [
        b"<html>not json</html>",
        b"",
        b"\xff\xfe\x00garbage",
        b"null",
        b"[1, 2, 3]",
        b'"header"',
        b'{"result": {"values": []}}',
        b'{"header": null}',
        b'{"header": "SUCCESS"}',
        b'{"header": {"isSuccessful": true, "resultMessage": "SUCCESS"}}',
        b'{"header": {"resultCode": null}}',
        b'{"header": {"resultCode": "zero"}}',
    ],
    ids=[
        "html",
        "empty",
        "binary",
        "json-null",
        "json-list",
        "json-string",
        "no-header",
        "null-header",
        "string-header",
        "no-resultCode",
        "null-resultCode",
        "text-resultCode",
    ],
)
def test_a_body_that_is_not_the_api_json_is_retried_as_bad_response(body: bytes) -> None:
    answer = parse_answer(200, body, LATENCY_S)

    assert answer.verdict is Verdict.RETRY
    assert answer.code == "bad_response"
    assert answer.recognition is None


@pytest.mark.parametrize(
    "tail",
    [{"result": None}, {}, {"result": "ok"}, {"result": {"values": [{"value": "1"}, 7]}}],
    ids=["null-result", "no-result", "string-result", "value-not-object"],
)
def test_success_without_a_usable_result_is_retried_as_bad_response(tail: dict[str, Any]) -> None:
    body = json.dumps({"header": _header(), **tail}).encode()

    answer = parse_answer(200, body, LATENCY_S)

    assert answer.verdict is Verdict.RETRY
    assert answer.code == "bad_response"
    assert answer.recognition is None


# --- parse_answer: documented failure codes -------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (4000002, Verdict.PERMANENT),
        (4131000, Verdict.PERMANENT),
        (4010001, Verdict.FATAL),
        (4000006, Verdict.THROTTLE),
        (5000503, Verdict.THROTTLE),
        (4010003, Verdict.FATAL),
        (-1, Verdict.RETRY),
        (5000001, Verdict.RETRY),
        (1234567, Verdict.UNKNOWN),
    ],
)
def test_failure_codes_keep_code_and_result_message(code: int, kind: Verdict) -> None:
    answer = parse_answer(200, _failure(code, f"message for {code}"), LATENCY_S)

    assert answer.verdict is kind
    assert answer.code == str(code)
    assert answer.message == f"message for {code}"
    assert answer.http_status == 200
    assert answer.recognition is None


def test_result_code_given_as_a_string_is_understood() -> None:
    answer = parse_answer(200, _failure("4000002", "Invalid file"), LATENCY_S)

    assert answer.verdict is Verdict.PERMANENT
    assert answer.code == "4000002"
    assert answer.message == "Invalid file"


def test_success_code_given_as_a_string_is_understood() -> None:
    doc = {"header": _header("0"), "result": {"values": [], "boxes": []}}

    answer = parse_answer(200, json.dumps(doc).encode(), LATENCY_S)

    assert answer.verdict is Verdict.DONE
    assert answer.code == "0"


def test_a_failure_message_is_truncated() -> None:
    answer = parse_answer(200, _failure(4000002, "x" * (MESSAGE_MAX_CHARS * 3)), LATENCY_S)

    assert answer.message == "x" * MESSAGE_MAX_CHARS


def test_a_failure_without_message_has_an_empty_message() -> None:
    body = json.dumps({"header": {"resultCode": 4000003}}).encode()

    answer = parse_answer(200, body, LATENCY_S)

    assert answer.verdict is Verdict.PERMANENT
    assert answer.message == ""


# --- Secret and settings --------------------------------------------------------------------


def test_secret_reveals_its_value_only_on_request() -> None:
    secret = Secret(SECRET_VALUE)

    assert secret.reveal() == SECRET_VALUE
    assert bool(secret) is True
    assert bool(Secret("")) is False


@pytest.mark.parametrize(
    "render",
    [
        repr,
        str,
        lambda s: f"{s}",
        lambda s: f"{s!r}",
        lambda s: f"{s!s}",
        lambda s: "%s %r" % (s, s),  # noqa: UP031 - old-style formatting must be safe too
        lambda s: "{}".format(s),  # noqa: UP032
        format,
        lambda s: repr([s, {"key": s}]),
    ],
    ids=[
        "repr",
        "str",
        "fstring",
        "fstring-r",
        "fstring-s",
        "percent",
        "format",
        "builtin",
        "nested",
    ],
)
def test_secret_never_prints_its_value(render: Any) -> None:
    text = render(Secret(SECRET_VALUE))

    assert SECRET_VALUE not in text
    assert "***" in text


def test_redact_replaces_every_occurrence() -> None:
    secret = Secret(SECRET_VALUE)
    text = f"Authorization: {SECRET_VALUE} then again {SECRET_VALUE}!"

    assert secret.redact(text) == "Authorization: *** then again ***!"


def test_redact_with_an_empty_secret_leaves_text_alone() -> None:
    assert Secret("").redact("nothing to hide") == "nothing to hide"


def test_settings_reprs_do_not_contain_the_secret() -> None:
    api = ApiSettings("https://ocr.example", "APPKEY", Secret(SECRET_VALUE))
    run = RunSettings(job="nightly", db_url="sqlite:///x.db", api=api)

    assert SECRET_VALUE not in repr(api)
    assert SECRET_VALUE not in str(api)
    assert SECRET_VALUE not in repr(run)
    assert "APPKEY" in repr(api)  # the repr is still useful, only the secret is hidden


def test_transport_error_messages_are_redacted() -> None:
    # A connection error's text can echo request headers; the secret must not leave the client.
    api = ApiSettings("https://ocr.example", "APPKEY", Secret(SECRET_VALUE))
    client = NhnClient(api, connections=1)

    answer = client._transport(
        "connection", f"reset while sending {SECRET_VALUE}", time.monotonic()
    )

    assert answer.verdict is Verdict.OUTAGE
    assert answer.code == "connection"
    assert SECRET_VALUE not in answer.message
    assert "***" in answer.message


def test_client_redact_hides_the_secret() -> None:
    api = ApiSettings("https://ocr.example", "APPKEY", Secret(SECRET_VALUE))

    text = NhnClient(api, connections=1).redact(f"KeyError({SECRET_VALUE!r})")

    assert text == "KeyError('***')"
