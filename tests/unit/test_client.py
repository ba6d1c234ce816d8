"""Unit tests of the NHN answer parsing and result-code classes (pipeline/client.py), and of the
`Secret` that keeps the secret key out of every printed text (pipeline/config.py)."""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

import pytest

from pipeline.answers import JSON_MAX_DEPTH, MESSAGE_MAX_CHARS, PLATE_VALUE_MAX_CHARS, parse_answer
from pipeline.client import NhnClient
from pipeline.config import ApiSettings, RunSettings, Secret
from pipeline.records import Plate
from pipeline.verdicts import Verdict, judge
from tests.support.odd_server import GUIDE_BOX

SECRET_VALUE = "s3cr3t-KEY-value"
LATENCY_S = 0.25

# The success body from NHN's API guide, as the API sends it (UTF-8, Korean plate text).
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
        b'{"header": {"resultCode": "0"}, "result": {"values": []}}',
        b'{"header": {"resultCode": "4000002"}}',
        b'{"header": {"resultCode": 0.5}}',
        b'{"header": {"resultCode": 0.0}, "result": {"values": []}}',
        b'{"header": {"resultCode": true}}',
        b'{"header": {"resultCode": 1e308}}',
        b'{"header": {"resultCode": NaN}}',
        b'{"header": {"resultCode": 100000000000000000000000}}',
        b'{"header": {"resultCode": [0]}}',
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
        "quoted-zero",
        "quoted-code",
        "half",
        "float-zero",
        "true",
        "1e308",
        "NaN",
        "past-int64",
        "list",
    ],
)
def test_a_body_that_is_not_the_api_json_is_retried_as_bad_response(body: bytes) -> None:
    answer = parse_answer(200, body, LATENCY_S)

    assert answer.verdict is Verdict.RETRY
    assert answer.code == "bad_response"
    assert answer.recognition is None


@pytest.mark.parametrize(
    "tail",
    [
        {"result": None},
        {},
        {"result": "ok"},
        {"result": {"values": [{"value": "1"}, 7]}},
        {"result": {"values": {"value": "1"}}},
        {"result": {"values": "12가3456"}},
        {"result": {"values": [], "boxes": {"x1": 1}}},
    ],
    ids=[
        "null-result",
        "no-result",
        "string-result",
        "value-not-object",
        "values-object",
        "values-string",
        "boxes-object",
    ],
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


def test_client_redact_hides_the_secret() -> None:
    api = ApiSettings("https://ocr.example", "APPKEY", Secret(SECRET_VALUE))

    text = NhnClient(api, connections=1).redact(f"KeyError({SECRET_VALUE!r})")

    assert text == "KeyError('***')"


# --- parse_answer: types and ranges ---------------------------------------------------------


@pytest.mark.parametrize(
    ("conf", "stored"),
    [
        (0.93, 0.93),
        (0, 0.0),
        (1, 1.0),
        (0.0, 0.0),
        ("0.93", None),
        (5.0, None),
        (-1, None),
        (1e308, None),
        (1.0000001, None),
        (True, None),
        ([0.9], None),
        ({"value": 0.9}, None),
    ],
    ids=repr,
)
def test_conf_is_a_number_in_zero_one_or_null(conf: Any, stored: float | None) -> None:
    # A conf the API cannot have sent is stored as NULL: the plate text is still a read, the
    # raw answer shows what came, and a retry would pay for the same answer again.
    body = _success([{"value": "11가1111", "conf": conf}], [GUIDE_BOX])

    answer = parse_answer(200, body, LATENCY_S)

    assert answer.verdict is Verdict.DONE
    assert answer.recognition.plates == (Plate("11가1111", stored, GUIDE_BOX_TUPLE),)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_conf_beyond_json_numbers_is_null(literal: bytes) -> None:
    body = _success([{"value": "11가1111", "conf": "CONF"}], [GUIDE_BOX])

    answer = parse_answer(200, body.replace(b'"CONF"', literal), LATENCY_S)

    assert answer.recognition.plates[0].conf is None


@pytest.mark.parametrize(
    "box",
    [
        {**GUIDE_BOX, "x1": 340.5},
        {**GUIDE_BOX, "y3": "3297"},
        {**GUIDE_BOX, "x4": True},
        {**GUIDE_BOX, "x2": 2**31},
        {**GUIDE_BOX, "y2": 1e308},
        {**GUIDE_BOX, "y2": [3231]},
    ],
    ids=["fractional", "string", "bool", "past-int32", "1e308", "list"],
)
def test_a_box_with_a_coordinate_that_is_not_an_integer_is_dropped(box: Any) -> None:
    body = _success([{"value": "11가1111", "conf": 0.9}], [box])

    answer = parse_answer(200, body, LATENCY_S)

    assert answer.verdict is Verdict.DONE
    assert answer.recognition.plates == (Plate("11가1111", 0.9, None),)
    assert "3231" in answer.recognition.raw  # what came stays in the raw answer


def test_integral_float_coordinates_are_integers() -> None:
    box = {k: float(v) for k, v in GUIDE_BOX.items()}
    body = _success([{"value": "11가1111", "conf": 0.9}], [{**box, "x1": -3}])

    plate = parse_answer(200, body, LATENCY_S).recognition.plates[0]

    assert plate.box == (-3, *GUIDE_BOX_TUPLE[1:])
    assert all(type(c) is int for c in plate.box)


def test_texts_that_are_not_strings_are_not_taken_as_text() -> None:
    values = [{"value": 1234, "conf": 0.9}, {"value": ["12가3456"], "conf": 0.9}]
    body = json.dumps(
        {
            "header": {"isSuccessful": True, "resultCode": 0, "resultMessage": {"ok": 1}},
            "result": {"fileType": ["png"], "values": values, "resolution": 1},
        }
    ).encode()

    answer = parse_answer(200, body, LATENCY_S)

    assert answer.verdict is Verdict.DONE
    assert answer.message == ""
    assert answer.recognition.file_type is None
    assert answer.recognition.resolution is None
    assert [p.value for p in answer.recognition.plates] == [None, None]


# --- parse_answer: absurd nesting -----------------------------------------------------------


def _nested(levels: int, opening: str = "[", closing: str = "]") -> str:
    return opening * levels + closing * levels


@pytest.mark.parametrize(
    "body",
    [
        _nested(100_000),
        '{"header": {"resultCode": 0}, "result": ' + _nested(5_000) + "}",
        '{"header": ' + '{"a": ' * 50_000 + "1" + "}" * 50_000 + "}",
        '{"header": {"resultCode": 0}, "result": {"values": ' + _nested(JSON_MAX_DEPTH) + "}}",
        "[" * 1_000_000,
    ],
    ids=["list-100k", "result-5k", "objects-50k", "just-past-the-limit", "unclosed-1M"],
)
def test_absurd_nesting_is_a_bad_response_not_a_recursion_error(body: str) -> None:
    answer = parse_answer(200, body.encode(), LATENCY_S)

    assert (answer.verdict, answer.code) == (Verdict.RETRY, "bad_response")
    assert "nested deeper" in answer.message


def test_nesting_within_the_limit_and_brackets_in_strings_are_fine() -> None:
    extra = json.loads(_nested(JSON_MAX_DEPTH - 2))
    body = _success([{"value": "[[[[" * 100 + '\\"{{{{', "conf": 0.9}], [GUIDE_BOX], extra=extra)

    answer = parse_answer(200, body, LATENCY_S)

    assert answer.verdict is Verdict.DONE
    assert answer.recognition.plates[0].value.startswith("[[[[")


def test_parse_answer_is_total_even_past_the_depth_check(monkeypatch) -> None:
    monkeypatch.setattr("pipeline.answers.JSON_MAX_DEPTH", 10**9)

    answer = parse_answer(200, _nested(200_000).encode(), LATENCY_S)

    assert (answer.verdict, answer.code) == (Verdict.RETRY, "bad_response")
    assert "RecursionError" in answer.message


# --- parse_answer: nothing hurtful leaves it ------------------------------------------------

SURROGATE = re.compile(r"[\ud800-\udfff]")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _texts(answer: Any) -> list[str]:
    texts = [answer.message]
    recognition = answer.recognition
    if recognition is not None:
        texts += [recognition.raw, recognition.file_type, recognition.resolution]
        texts += [p.value for p in recognition.plates]
    return [t for t in texts if t is not None]


def _assert_harmless(answer: Any, secret: str = SECRET_VALUE) -> None:
    database = sqlite3.connect(":memory:")
    database.execute("CREATE TABLE t (text TEXT)")
    for text in _texts(answer):
        assert not SURROGATE.search(text), text
        assert secret[:6] not in text, text
        database.execute("INSERT INTO t VALUES (?)", (text,))  # raises on a lone surrogate
        text.encode("utf-8")
    for text in _texts(answer)[:1] + _texts(answer)[2:]:  # every text but raw: one clean line
        assert not CONTROL.search(text) and "\n" not in text and "\t" not in text, text


def test_a_poisoned_answer_leaves_nothing_hurtful() -> None:
    from tests.support.odd_server import poison

    answer = parse_answer(200, poison(SECRET_VALUE), LATENCY_S, secret=Secret(SECRET_VALUE))

    assert answer.verdict is Verdict.DONE
    _assert_harmless(answer)
    recognition = answer.recognition
    assert recognition.file_type == "jpg"
    assert recognition.resolution == "normal"
    (plate,) = recognition.plates
    assert plate.value.startswith("12가3456 ") and plate.value.endswith("Authorization: ***")
    assert "Authorization: ***" in answer.message
    assert not CONTROL.search(recognition.raw.replace("\n", ""))
    # The raw answer is still the JSON it was, and parses to storable text again.
    reparsed = json.dumps(json.loads(recognition.raw), ensure_ascii=False)
    assert not SURROGATE.search(reparsed) and "\x00" not in reparsed
    assert "Authorization: ***" in reparsed


def test_a_surrogate_pair_is_kept_and_only_lone_ones_go() -> None:
    value = rb'"A\ud83d\ude00B\udc00C\\ud800"'  # a pair, a lone one, an escaped backslash
    body = b'{"header": {"resultCode": 0}, "result": {"values": [{"value": %s}]}}' % value

    answer = parse_answer(200, body, LATENCY_S)

    assert answer.recognition.plates[0].value == "A\U0001f600BC\\ud800"
    assert json.loads(answer.recognition.raw)["result"]["values"][0]["value"] == (
        "A\U0001f600B\ufffdC\\ud800"
    )
    _assert_harmless(answer)


@pytest.mark.parametrize(
    "field", ["value", "fileType", "resolution", "resultMessage"], ids=lambda f: f
)
def test_the_secret_is_scrubbed_from_every_text_even_where_it_is_cut(field: str) -> None:
    # Scrubbed before the cut: the 64-character plate value or the 8-character fileType
    # would otherwise keep a prefix of it.
    echoed = "x" * 50 + SECRET_VALUE
    value = {"value": echoed if field == "value" else "11가1111", "conf": 0.9}
    extra = {field: echoed} if field in ("fileType", "resolution") else {}
    doc = json.loads(_success([value], [GUIDE_BOX], **extra))
    if field == "resultMessage":
        doc["header"]["resultMessage"] = "x" * (MESSAGE_MAX_CHARS - 5) + SECRET_VALUE
    body = json.dumps(doc).encode()

    answer = parse_answer(200, body, LATENCY_S, secret=Secret(SECRET_VALUE))

    assert answer.verdict is Verdict.DONE
    _assert_harmless(answer)
    assert len(answer.recognition.plates[0].value) <= PLATE_VALUE_MAX_CHARS


def test_the_secret_is_scrubbed_from_failure_messages_and_snippets() -> None:
    secret = Secret(SECRET_VALUE)
    failure = parse_answer(200, _failure(4000002, f"bad {SECRET_VALUE}"), LATENCY_S, secret=secret)
    gateway = parse_answer(502, b"x" * 190 + SECRET_VALUE.encode(), LATENCY_S, secret=secret)
    garbage = parse_answer(200, b"<" + SECRET_VALUE.encode(), LATENCY_S, secret=secret)

    assert failure.message == "bad ***"
    for answer in (failure, gateway, garbage):
        _assert_harmless(answer)


def test_a_secret_the_json_escapes_is_scrubbed_from_raw_too() -> None:
    secret = "sé-clé-ключ-1234"
    body = json.dumps(
        {"header": _header(), "result": {"values": [{"value": secret, "conf": 0.5}]}}
    ).encode()  # ensure_ascii: the raw text has \u00e9 escapes
    assert secret.encode() not in body

    answer = parse_answer(200, body, LATENCY_S, secret=Secret(secret))

    assert answer.recognition.plates[0].value == "***"
    assert "\\u00e9-cl\\u00e9" not in answer.recognition.raw
    assert json.loads(answer.recognition.raw)["result"]["values"][0]["value"] == "***"


def test_control_characters_go_and_line_breaks_become_spaces() -> None:
    body = _success([{"value": "12\x85가\x9b34\x1b[0m\x7f56", "conf": 0.9}], [])
    doc = json.loads(body)
    doc["header"]["resultMessage"] = "two\nlines\r\n\tand a bell\x07"
    body = json.dumps(doc).encode()

    answer = parse_answer(200, body, LATENCY_S)

    assert answer.recognition.plates[0].value == "12가34[0m56"
    assert answer.message == "two lines and a bell"
    _assert_harmless(answer)


# --- parse_answer: endpoints that cannot work -----------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_fatal_and_names_where_it_points(status: int) -> None:
    location = f"https://other.example/v1?auth={SECRET_VALUE}\r\nX-Injected: 1"

    answer = parse_answer(
        status, b"moved", LATENCY_S, location=location, secret=Secret(SECRET_VALUE)
    )

    assert (answer.verdict, answer.code, answer.http_status) == (Verdict.FATAL, "redirect", status)
    assert "https://other.example/v1?auth=*** X-Injected: 1" in answer.message
    assert "--endpoint" in answer.message
    _assert_harmless(answer)


def test_a_redirect_without_a_location_says_so() -> None:
    answer = parse_answer(302, b"", LATENCY_S)

    assert (answer.verdict, answer.code) == (Verdict.FATAL, "redirect")
    assert "no Location header" in answer.message


@pytest.mark.parametrize("status", [401, 403, 404, 405, 407, 501])
def test_http_statuses_of_an_endpoint_that_cannot_work_are_fatal(status: int) -> None:
    answer = parse_answer(status, b"<html>\nNope\n</html>", LATENCY_S)

    assert judge(f"http_{status}") is Verdict.FATAL
    assert (answer.verdict, answer.code) == (Verdict.FATAL, f"http_{status}")
    assert f"HTTP {status}" in answer.message and "\n" not in answer.message


@pytest.mark.parametrize(
    ("status", "kind"), [(500, Verdict.OUTAGE), (502, Verdict.OUTAGE), (418, Verdict.UNKNOWN)]
)
def test_other_statuses_keep_their_class(status: int, kind: Verdict) -> None:
    assert judge(f"http_{status}") is kind


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("120", 120.0), ("-5", 0.0), ("nan", None), ("inf", None), ("soon", None), (None, None)],
)
def test_retry_after_is_a_finite_number_of_seconds_or_nothing(
    header: str | None, seconds: float | None
) -> None:
    answer = parse_answer(429, b"slow down", LATENCY_S, header)

    assert answer.retry_after_s == seconds


def test_every_answer_from_the_server_reached_it() -> None:
    for answer in (
        parse_answer(200, GUIDE_BODY, LATENCY_S),
        parse_answer(200, b"garbage", LATENCY_S),
        parse_answer(301, b"", LATENCY_S),
        parse_answer(502, b"", LATENCY_S),
    ):
        assert answer.reached is True


@pytest.mark.parametrize("code", [4000201, 5004003])
def test_a_result_without_a_plate_goes_through_the_same_checks(code: int) -> None:
    doc = {
        "header": _header(code, f"no plate \ud800{SECRET_VALUE}"),
        "result": {"fileType": SECRET_VALUE, "resolution": "low\x00", "values": "odd"},
    }
    body = json.dumps(doc).encode()

    answer = parse_answer(200, body, LATENCY_S, secret=Secret(SECRET_VALUE))

    assert (answer.verdict, answer.code) == (Verdict.NO_PLATE, str(code))
    recognition = answer.recognition
    assert (recognition.result_code, recognition.plates) == (code, ())
    assert (recognition.file_type, recognition.resolution) == ("***", "low")
    assert answer.message == "no plate ***"
    _assert_harmless(answer)
