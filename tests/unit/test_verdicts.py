"""SPEC's result-code table, row by row, against pipeline/verdicts.py: the one place that says
what an answer means. The rows are written out here, not derived from the module's table, so a
change to either shows."""

from __future__ import annotations

import pytest

from pipeline.verdicts import RESULT_CODES, Verdict, judge, result_key

V = Verdict

SPEC_ROWS = [
    ("0", V.DONE),
    ("4000201", V.NO_PLATE),
    ("5004003", V.NO_PLATE),
    ("-1", V.RETRY),
    ("4000001", V.PERMANENT),
    ("4000002", V.PERMANENT),
    ("4000003", V.PERMANENT),
    ("4000004", V.PERMANENT),
    ("4131000", V.PERMANENT),
    ("400", V.PERMANENT),
    ("415", V.PERMANENT),
    ("401", V.FATAL),
    ("403", V.FATAL),
    ("404", V.FATAL),
    ("405", V.FATAL),
    ("4000005", V.FATAL),
    ("4000401", V.FATAL),
    ("4010001", V.FATAL),
    ("4010002", V.FATAL),
    ("4010003", V.FATAL),
    ("4010004", V.FATAL),
    ("4010005", V.FATAL),
    ("4000006", V.THROTTLE),
    ("5000503", V.THROTTLE),
    ("5000001", V.RETRY),
    ("5000002", V.RETRY),
    ("5000003", V.RETRY),
    ("5000004", V.RETRY),
    ("5000005", V.RETRY),
    ("5004001", V.RETRY),
    ("5004002", V.RETRY),
    ("5123456", V.RETRY),  # any other 5xxxxxx
    ("5999999", V.RETRY),
    ("1234567", V.UNKNOWN),
    ("4000007", V.UNKNOWN),
    ("6000000", V.UNKNOWN),
    ("1", V.UNKNOWN),
]

TRANSPORT_ROWS = [
    ("timeout", V.OUTAGE),
    ("connection", V.OUTAGE),
    ("connection_refused", V.OUTAGE),
    ("http_502", V.OUTAGE),
    ("http_503", V.OUTAGE),
    ("http_500", V.OUTAGE),
    ("http_429", V.THROTTLE),
    ("http_401", V.FATAL),
    ("http_403", V.FATAL),
    ("http_404", V.FATAL),
    ("http_405", V.FATAL),
    ("http_407", V.FATAL),
    ("http_501", V.FATAL),
    ("http_301", V.FATAL),
    ("http_413", V.PERMANENT),
    ("http_418", V.UNKNOWN),
    ("bad_response", V.RETRY),
    ("redirect", V.FATAL),
    ("tls", V.FATAL),
    ("unknown_host", V.FATAL),
    ("what-is-this", V.UNKNOWN),
    ("http_", V.UNKNOWN),
]


@pytest.mark.parametrize(("code", "verdict"), SPEC_ROWS + TRANSPORT_ROWS)
def test_every_code_has_the_verdict_spec_gives_it(code: str, verdict: Verdict) -> None:
    assert judge(code) is verdict


def test_every_code_in_nhn_s_table_is_in_spec_s_rows() -> None:
    spec_codes = {int(code) for code, _ in SPEC_ROWS}
    assert set(RESULT_CODES) <= spec_codes


def test_a_result_is_done_with_or_without_a_plate() -> None:
    assert [v for v in Verdict if v.recognized] == [V.DONE, V.NO_PLATE]
    assert not V.THROTTLE.retried and not V.FATAL.retried and not V.PERMANENT.retried


def test_result_keys_name_nhn_s_keys() -> None:
    assert result_key("4000201") == "VEHICLE_PLATE_NOT_FOUND"
    assert result_key("5000503") == "API_TEMPORARILY_UNAVAILABLE"
    assert result_key("timeout") is None
    assert result_key("1234567") is None
