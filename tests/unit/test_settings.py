"""The table of settings: each row names a real field, and the objects take their defaults
from it."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path

import click

from pipeline.cli import cli
from pipeline.config import ApiSettings, RunSettings, build
from pipeline.settings import SETTINGS, environment_names

OBJECT_FIELDS = {f.name: f for kind in (ApiSettings, RunSettings) for f in fields(kind)}


def test_every_row_names_a_field_of_a_settings_object_with_its_default() -> None:
    for setting in SETTINGS.values():
        if setting.field is None:
            continue
        assert setting.field in OBJECT_FIELDS, setting.key
        declared = OBJECT_FIELDS[setting.field].default
        if declared is not MISSING:
            assert declared == setting.value, setting.key


def test_a_setting_in_seconds_says_so_in_its_field_name() -> None:
    suffixes = {"s": "_s", "1/s": "_per_s"}
    for setting in SETTINGS.values():
        if setting.field is not None and setting.unit in suffixes:
            assert setting.field.endswith(suffixes[setting.unit]), setting.key
        elif setting.field is not None:
            assert not setting.field.endswith("_s"), setting.key


def test_every_option_of_a_setting_comes_from_its_row() -> None:
    def walk(group: click.Group, prefix: str = ""):
        for name, command in group.commands.items():
            yield f"{prefix}{name}", command
            if isinstance(command, click.Group):
                yield from walk(command, f"{prefix}{name} ")

    for name, command in [("", cli), *walk(cli)]:
        for setting in SETTINGS.values():
            has = any(p.name == setting.name for p in command.params)
            assert has == (name in setting.commands and setting.option), (name, setting.key)


def test_the_table_s_variables_are_the_readme_s() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("**Environment variables.**", 1)[1].split("\n\n**", 1)[0]
    documented = set(re.findall(r"`((?:NHN_OCR|PLATEPIPE)_[A-Z0-9_]+)`", section))
    names = environment_names()

    assert len(names) == len(set(names))
    # The store's heartbeat timeout is a knob of the fleet, not a setting of a command.
    assert set(names) == documented - {"PLATEPIPE_HEARTBEAT_TIMEOUT_S"}


def test_click_values_become_the_object_s_fields() -> None:
    values = {"db_url": "sqlite:///x.db", "include": ["*.png"], "rate": 2.5, "min_age": 60.0}

    settings = build(RunSettings, values, job="j", api=ApiSettings("http://h", "k", None))  # type: ignore[arg-type]

    assert (settings.db_url, settings.include, settings.rate_per_s) == (
        "sqlite:///x.db",
        ("*.png",),
        2.5,
    )
    assert settings.min_age_s == 60.0 and settings.concurrency is None  # auto
