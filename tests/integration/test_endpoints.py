"""An endpoint that cannot work stops `platepipe run` at once: exit 1, one line that says why,
no traceback, no item failed. And `--ca-bundle` makes a private CA's endpoint work."""

from __future__ import annotations

import time

import pytest

from tests.support.cli import platepipe
from tests.support.corpus import make_corpus
from tests.support.db import query
from tests.support.tls import self_signed

SECONDS = 20  # "in seconds": the run must not wait out an outage


def run(tmp_path, sqlite_url, env, *options: str):
    corpus = make_corpus(tmp_path / "archive", 4, large_every=0)
    started = time.monotonic()
    result = platepipe(
        "run", "--job", "j", str(corpus.root), "--db", sqlite_url, *options, env=env, timeout=120
    )
    return result, time.monotonic() - started


def assert_one_line_fatal(result, elapsed: float, says: str, secret_key: str) -> None:
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert result.returncode == 1, result.stderr
    assert elapsed < SECONDS
    assert "Traceback" not in result.stderr
    assert len(errors) == 1 and errors[0].startswith("platepipe: error: "), result.stderr
    assert says in errors[0], errors[0]
    assert secret_key not in result.stdout + result.stderr


def failed_items(sqlite_url: str) -> int:
    return query(sqlite_url, "SELECT count(*) FROM items WHERE status = 'failed'")[0][0]


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("redirect", "redirects (HTTP 301) to http://127.0.0.1:"),
        ("status-404", "HTTP 404"),
        ("status-405", "HTTP 405"),
        ("status-407", "HTTP 407"),
        ("status-501", "HTTP 501"),
    ],
)
def test_an_endpoint_that_answers_wrong_stops_the_run(
    mode, says, tmp_path, sqlite_url, start_odd_server, platepipe_env, secret_key
):
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": start_odd_server(mode)}

    result, elapsed = run(tmp_path, sqlite_url, env)

    assert_one_line_fatal(result, elapsed, says, secret_key)
    assert failed_items(sqlite_url) == 0


def test_a_self_signed_certificate_stops_the_run_and_ca_bundle_makes_it_work(
    tmp_path, sqlite_url, start_odd_server, platepipe_env, secret_key
):
    cert, key = self_signed(tmp_path)
    url = start_odd_server("guide", "--tls", str(cert), str(key))
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": url}

    result, elapsed = run(tmp_path, sqlite_url, env)

    assert_one_line_fatal(result, elapsed, "does not verify", secret_key)
    assert "--ca-bundle" in result.stderr
    assert failed_items(sqlite_url) == 0
    trusted = platepipe("run", "--job", "j", "--db", sqlite_url, "--ca-bundle", str(cert), env=env)
    assert trusted.returncode == 0, trusted.stderr
    assert query(sqlite_url, "SELECT count(*) FROM plate_reads")[0][0] > 0


@pytest.mark.parametrize(
    ("endpoint", "options", "says"),
    [
        ("https://ocr.platepipe-test.invalid", (), "unknown host ocr.platepipe-test.invalid"),
        ("ocr.api.nhncloudservice.com", (), "has no scheme"),
        ("https://ocr.api.nhncloudservice.com", ("--ca-bundle", "missing.pem"), "ca_bundle"),
    ],
    ids=["unknown-host", "scheme-less", "missing-ca-bundle"],
)
def test_settings_that_cannot_work_stop_the_run(
    endpoint, options, says, tmp_path, sqlite_url, platepipe_env, secret_key
):
    # None of these reaches the network: .invalid never resolves (RFC 2606), and the other two
    # are refused before any call.
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": endpoint}
    options = tuple(str(tmp_path / o) if o.endswith(".pem") else o for o in options)

    result, elapsed = run(tmp_path, sqlite_url, env, *options)

    assert_one_line_fatal(result, elapsed, says, secret_key)
