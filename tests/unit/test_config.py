"""The config file: what it may hold, how it becomes click's defaults, and config/default.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from pipeline.config import (
    Secret,
    check_ca_bundle,
    check_endpoint,
    clean_key,
    default_map,
    read_config_file,
    ssl_context,
)
from pipeline.errors import ConfigError
from pipeline.settings import FILE_SETTINGS

DEFAULT_TOML = Path(__file__).resolve().parents[2] / "config" / "default.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "platepipe.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_file_gives_its_values(tmp_path) -> None:
    path = write(
        tmp_path,
        'rate = 7\nconcurrency = 3\ninclude = ["*.jpg"]\nlog_json = true\n'
        "capture_pattern = '(?P<camera>cam\\d+)/'\n",
    )

    assert read_config_file(path) == {
        "rate": 7,
        "concurrency": 3,
        "include": ["*.jpg"],
        "log_json": True,
        "capture_pattern": r"(?P<camera>cam\d+)/",
    }


def test_an_unknown_key_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match="'rat'"):
        read_config_file(write(tmp_path, "rat = 7.5\n"))


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('rate = "fast"', "rate"),
        ("rate = true", "rate"),
        ("concurrency = 2.5", "concurrency"),
        ("concurrency = true", "concurrency"),
        ('include = "*.jpg"', "include"),
        ("include = [1, 2]", "include"),
        ('log_json = "yes"', "log_json"),
        ("db = 5", "db"),
        ("[run]\nrate = 5", "run"),
    ],
)
def test_a_wrong_type_is_named(tmp_path, text, key) -> None:
    with pytest.raises(ConfigError, match=key):
        read_config_file(write(tmp_path, text + "\n"))


def test_invalid_toml_and_a_missing_file_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_config_file(write(tmp_path, "rate = = 1\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        read_config_file(tmp_path / "missing.toml")


def test_default_map_reaches_every_command_that_has_the_option() -> None:
    tree = default_map({"rate": 7.5, "db": "sqlite:///x.db", "log_json": True})

    assert tree["run"]["rate"] == tree["config"]["rate"] == 7.5
    for command in ("run", "config", "status", "jobs", "retry", "export"):
        assert tree[command]["db_url"] == "sqlite:///x.db", command
    assert tree["db"]["upgrade"]["db_url"] == "sqlite:///x.db"
    assert tree["log_json"] is True
    assert "rate" not in tree["status"]


def test_the_secret_never_prints() -> None:
    secret = Secret("s3cr3t-value")

    assert "s3cr3t-value" not in repr(secret) + str(secret) + f"{secret}"
    assert secret.reveal() == "s3cr3t-value"
    assert secret.redact("key=s3cr3t-value!") == "key=***!"
    assert Secret("").redact("text") == "text"


def test_default_toml_lists_every_setting_with_its_default() -> None:
    if not DEFAULT_TOML.exists():
        pytest.skip(f"{DEFAULT_TOML} does not exist yet (being written)")

    read_config_file(DEFAULT_TOML)  # valid as a config file
    values = tomllib.loads(DEFAULT_TOML.read_text(encoding="utf-8"))  # as written, unresolved

    assert set(values) == set(FILE_SETTINGS)
    for key, setting in FILE_SETTINGS.items():
        assert values[key] == setting.default, key


@pytest.mark.parametrize(
    "endpoint",
    ["https://ocr.api.nhncloudservice.com", "http://127.0.0.1:8080", "https://gw.example/ocr/"],
)
def test_an_endpoint_with_a_scheme_and_a_host_is_taken(endpoint: str) -> None:
    assert check_endpoint(endpoint) == endpoint


@pytest.mark.parametrize(
    ("endpoint", "says"),
    [
        ("ocr.example.com", "has no scheme: write https://ocr.example.com"),
        ("localhost:8080", "has no scheme"),
        ("ftp://ocr.example.com", "must be http or https"),
        ("https://", "has no host"),
        ("https:///v1.0", "has no host"),
        ("http://ocr.example.com:port", "is not a URL"),
    ],
)
def test_an_endpoint_that_cannot_work_is_a_config_error(endpoint: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)) as raised:
        check_endpoint(endpoint)

    assert "\n" not in str(raised.value)


def test_a_ca_bundle_must_be_a_readable_pem_of_certificates(tmp_path) -> None:
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")

    with pytest.raises(ConfigError, match=r"cannot read ca_bundle .*: No such file"):
        check_ca_bundle(str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="cannot read ca_bundle"):
        check_ca_bundle(str(tmp_path))
    with pytest.raises(ConfigError, match="is not a PEM file of certificates"):
        check_ca_bundle(str(not_pem))
    assert check_ca_bundle("") is None
    assert ssl_context(None) is None


def test_a_ca_bundle_becomes_the_only_trusted_cas(tmp_path) -> None:
    from tests.support.tls import self_signed

    cert, _key = self_signed(tmp_path)

    assert check_ca_bundle(str(cert)) == str(cert)
    context = ssl_context(str(cert))
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "127.0.0.1"),),)]


def test_relative_paths_in_a_config_file_are_beside_it(tmp_path) -> None:
    path = write(
        tmp_path,
        'secret_key_file = "keys/nhn.key"\ndb = "sqlite:///plates.db"\n',
    )

    values = read_config_file(path)

    assert values["secret_key_file"] == str(tmp_path / "keys" / "nhn.key")
    assert values["db"] == f"sqlite:///{tmp_path / 'plates.db'}"


def test_absolute_paths_and_other_databases_stay_as_written(tmp_path) -> None:
    text = 'secret_key_file = "/etc/nhn.key"\ndb = "sqlite:////var/lib/plates.db"\n'
    assert read_config_file(write(tmp_path, text)) == {
        "secret_key_file": "/etc/nhn.key",
        "db": "sqlite:////var/lib/plates.db",
    }
    pg = 'db = "postgresql://plates@db:5432/plates"\n'
    assert read_config_file(write(tmp_path, pg))["db"] == "postgresql://plates@db:5432/plates"


@pytest.mark.parametrize("raw", ["sk-abc\r\n", "  sk-abc\n", "sk-abc", "\tsk-abc \r"])
def test_keys_lose_the_whitespace_around_them(raw: str) -> None:
    assert clean_key(raw, "secret_key_file") == "sk-abc"


@pytest.mark.parametrize("raw", ["sk-\rabc", "sk-abc\x00x", "sk\x1b[0m-abc", "sk-a\nbc"])
def test_a_control_character_inside_a_key_is_an_error_that_hides_it(raw: str) -> None:
    with pytest.raises(ConfigError, match="control character") as caught:
        clean_key(raw, "NHN_OCR_SECRET_KEY")

    assert "abc" not in str(caught.value)
    assert "NHN_OCR_SECRET_KEY" in str(caught.value)
