"""Unit tests of database URL handling (pipeline/db.py): plain URLs in, the async driver out."""

from __future__ import annotations

import inspect

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from pipeline.db import absolute_url, async_url, display_url, parse_url
from pipeline.errors import EXIT_USAGE, BadUrlError, ConfigError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite:////abs/path/nightly.db", "sqlite+aiosqlite:////abs/path/nightly.db"),
        ("sqlite+pysqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u@h:5432/d", "postgresql+asyncpg://u@h:5432/d"),
        ("postgres://u@h:5432/d", "postgresql+asyncpg://u@h:5432/d"),
        ("postgresql+asyncpg://u@h:5432/d", "postgresql+asyncpg://u@h:5432/d"),
        ("postgresql+psycopg2://u@h:5432/d", "postgresql+asyncpg://u@h:5432/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+asyncpg://u@h/d"),
    ],
)
def test_async_url_picks_the_async_driver(url: str, expected: str) -> None:
    assert async_url(url) == expected
    assert parse_url(url).drivername == expected.split(":", 1)[0]


def test_async_url_keeps_the_password() -> None:
    assert async_url("postgresql://u:pw@h:5432/d") == "postgresql+asyncpg://u:pw@h:5432/d"


def test_async_url_keeps_a_password_with_special_characters() -> None:
    url = "postgres://user:p%40ss%2Fw%3Ard@db.example:5432/plates"

    parsed = make_url(async_url(url))

    assert parsed.password == "p@ss/w:rd"
    assert parsed.username == "user"
    assert parsed.host == "db.example"
    assert parsed.port == 5432
    assert parsed.database == "plates"


def test_async_url_keeps_query_options() -> None:
    parsed = parse_url("postgresql://u@h/d?application_name=platepipe")

    assert parsed.query == {"application_name": "platepipe"}


@pytest.mark.parametrize(
    "url",
    ["postgresql://u:topsecret@h:5432/d", "postgres://u:topsecret@h/d", "sqlite:///x.db"],
)
def test_display_url_hides_the_password(url: str) -> None:
    shown = display_url(url)

    assert "topsecret" not in shown
    assert make_url(shown).host == make_url(url).host
    if make_url(url).password:
        assert "***" in shown


def test_display_url_of_garbage_does_not_raise() -> None:
    assert display_url("not a url at all") == "<invalid URL>"


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:pw@h/d",
        "mysql+aiomysql://u@h/d",
        "oracle://u@h/d",
        "garbage",
        "",
        "://nothing",
        "sqlite:\n///x.db",
    ],
)
def test_unsupported_or_garbage_url_is_a_one_line_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_url(url)

    message = str(caught.value)
    assert message
    assert "\n" not in message


def test_config_error_for_an_unsupported_url_does_not_show_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        async_url("mysql://u:topsecret@h/d")

    assert "topsecret" not in str(caught.value)


def test_a_plain_libpq_url_with_sslmode_works_with_asyncpg() -> None:
    url = "postgresql://u:pw@db.example:5432/plates?sslmode=require"
    try:
        parsed = parse_url(url)
    except ConfigError as exc:  # refusing it with a clear message is acceptable too
        assert "\n" not in str(exc)
        return
    engine = create_async_engine(parsed)
    _args, kwargs = engine.dialect.create_connect_args(engine.url)

    accepted = set(inspect.signature(asyncpg.connect).parameters)
    assert set(kwargs) <= accepted


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://plates.db",  # two slashes: the name lands where a host goes
        "sqlite://",
        "sqlite:///",
        "sqlite:///:memory:",
        "postgresql://u@host:notaport/x",
        "postgresql://u:topsecret@host:notaport/x",
    ],
)
def test_urls_that_cannot_name_a_database_are_usage_errors(url: str) -> None:
    with pytest.raises(BadUrlError) as caught:
        parse_url(url)

    assert caught.value.exit_code == EXIT_USAGE
    assert "\n" not in str(caught.value) and "topsecret" not in str(caught.value)


def test_display_url_of_a_bad_port_does_not_raise() -> None:
    assert display_url("postgresql://u:pw@h:nope/d") == "<invalid URL>"


def test_absolute_url_names_the_file_this_folder_means(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)

    assert absolute_url("sqlite:///plates.db") == f"sqlite:///{tmp_path / 'plates.db'}"
    assert absolute_url("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert absolute_url("postgresql://u:pw@h/d") == "postgresql://u:pw@h/d"
