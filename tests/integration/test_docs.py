"""README.md tells the truth: every command is documented with help text, and every SQL query
in "Querying results" runs on SQLite and PostgreSQL and gives the right answer."""

from __future__ import annotations

import importlib
import re
import shutil
from collections import Counter
from datetime import datetime
from pathlib import Path

import click
import pytest
from PIL import Image

from pipeline.cli import cli
from pipeline.emulator import synthetic_result
from pipeline.usage import local_day
from pipeline.verdicts import RESULT_CODES, Verdict, judge
from tests.support.cli import platepipe
from tests.support.corpus import make_image, sha256_file
from tests.support.db import query

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
JOB = "nightly-2026-11-24"
PATTERN = r"/(?P<camera>cam\d+)/(?P<date>\d{8})_(?P<time>\d{6})"


def commands(group: click.Group = cli, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    context = click.Context(group)
    for name in group.list_commands(context):  # lazily loaded commands too
        command = group.get_command(context, name)
        assert command is not None, name
        found.append((f"{prefix}{name}", command))
        if isinstance(command, click.Group):
            found += commands(command, f"{prefix}{name} ")
    return found


@pytest.mark.parametrize(("name", "command"), commands())
def test_every_command_has_help_and_is_in_the_readme(name: str, command: click.Command):
    assert (command.help or "").strip(), f"{name} has no help text"
    assert f"platepipe {name}" in README, f"README.md never shows `platepipe {name}`"
    for param in command.params:
        if isinstance(param, click.Option):
            assert (param.help or "").strip(), f"{name} {param.opts} has no help text"


def readme_queries() -> dict[str, str]:
    section = README.split("## Querying results", 1)[1]
    block = re.search(r"```sql\n(.*?)```", section, re.DOTALL).group(1)
    queries = {}
    for chunk in block.split("\n\n"):
        title, _, sql = chunk.strip().partition("\n")
        queries[title.removeprefix("-- ").strip()] = sql.strip().rstrip(";")
    return queries


def test_the_readme_has_the_queries_operators_need():
    titles = " / ".join(readme_queries()).lower()
    for topic in ("sightings", "per camera per hour", "low-confidence", "low-resolution",
                  "failed items by error code", "no plate"):  # fmt: skip
        assert topic in titles


def _when(value) -> str:
    return str(value)[:19]


@pytest.fixture
def night(tmp_path, db_url, start_emulator, platepipe_env):
    """A night of three cameras, run to its end; what the files and the emulator say."""
    archive = tmp_path / "archive"
    files: dict[Path, tuple[str, str]] = {}
    for n in range(36):
        camera = f"cam0{n % 3 + 1}"
        stamp = f"2026112{4 if n < 24 else 5}_{(17 + n) % 24:02d}{n:02d}07"
        path = archive / camera / f"{stamp}.jpg"
        size = (1280, 720) if n % 9 == 0 else (160, 120)
        make_image(path, *size, "JPEG", seed=500 + n)
        when = datetime.strptime(stamp, "%Y%m%d_%H%M%S").isoformat(sep=" ")
        files[path] = (camera, when)
    # The same frame under another camera: its plates are seen twice.
    twin_from = next(p for p in files if _plates(p) and files[p][0] != "cam03")
    twin = archive / "cam03" / "20261124_230000.jpg"
    shutil.copyfile(twin_from, twin)
    files[twin] = ("cam03", "2026-11-24 23:00:00")
    broken = archive / "cam02" / "20261124_235959.jpg"
    make_image(broken, 320, 240, "JPEG", seed=9)
    broken.write_bytes(broken.read_bytes()[:900])
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}

    result = platepipe(
        "run", "--job", JOB, str(archive), "--rate", "300", "--capture-pattern", PATTERN, env=env
    )

    assert result.returncode == 4, result.stderr  # the truncated frame failed
    answers = emulator.stats()["answers"]
    reads = []
    for path, (camera, when) in files.items():
        # A 4000201 answer (no plate) has no result: no plate, and no resolution either.
        result_ = answers[sha256_file(path)].get("result", {"values": []})
        for value in result_["values"]:
            reads.append((str(path), camera, when, value["value"], value["conf"]))
        files[path] = (camera, when, result_)
    night = {"db": db_url, "files": files, "reads": reads, "broken": str(broken), "twin": twin}
    return {**night, "calls": emulator.stats()["calls"]}


def _plates(path: Path) -> list:
    """The plates the emulator will answer for this frame: it derives them from the bytes."""
    data = path.read_bytes()
    with Image.open(path) as image:
        return synthetic_result(data, *image.size, "jpg")["values"]


def test_every_readme_query_answers_right(night):
    queries = readme_queries()
    reads, files, db = night["reads"], night["files"], night["db"]
    twin_value = files[night["twin"]][2]["values"][0]["value"]
    in_night = [r for r in reads if "2026-11-24 18:00:00" <= r[2] < "2026-11-25 06:00:00"]
    plate = next(r[3] for r in in_night)

    sightings = query(db, queries[next(q for q in queries if "Sightings" in q)]
                      .replace("12가3456", plate))  # fmt: skip
    expected = sorted((c, w, conf) for _, c, w, v, conf in in_night if v == plate)
    assert [(c, _when(w), conf) for c, w, conf, _ in sightings] == sorted(
        expected, key=lambda r: r[1]
    )

    hourly = query(db, queries["Plates per camera per hour"])
    assert {(c, h): n for c, h, n in hourly} == Counter((c, w[:13]) for _, c, w, _, _ in reads)

    low_conf = query(db, queries["Low-confidence reads, to check by eye"])
    assert low_conf == sorted(((p, v, conf) for p, _, _, v, conf in reads if conf < 0.6),
                              key=lambda r: (r[2], r[0]))  # fmt: skip

    low_res = query(db, queries["Low-resolution images (below 1280x720), with or without a plate"])
    assert [p for (p,) in low_res] == sorted(
        str(p) for p, (_, _, r) in files.items() if r.get("resolution") == "low"
    )

    failed = query(db, queries["Failed items by error code"])
    assert failed == [("4000002", 1)]

    no_plate = query(db, queries["Images with no plate"])
    assert [p for (p,) in no_plate] == sorted(str(p) for p, (_, _, r) in files.items()
                                              if not r["values"])  # fmt: skip

    shared = query(db, queries["Plates seen by more than one camera"])
    assert twin_value in {v for v, cameras, _ in shared}
    by_value: dict[str, set[str]] = {}
    for _, camera, _, value, _ in reads:
        by_value.setdefault(value, set()).add(camera)
    assert {v: n for v, n, _ in shared} == {v: len(c) for v, c in by_value.items() if len(c) > 1}

    per_day = query(
        db, queries["Calls per day (local calendar day), every job, from the usage ledger"]
    )
    calls = night["calls"]
    # One copy: the twin (a copy of another night's file, see `night`), done with no call.
    assert [(d, int(c), int(cp), int(f)) for d, c, cp, f in per_day] == [(local_day(), calls, 1, 0)]

    why_sql = queries["Why did this image fail? Every call, in order"]
    why = query(db, re.sub(r"i\.path = '[^']*'", f"i.path = '{night['broken']}'", why_sql))
    assert [(a, outcome, code) for a, _, _, outcome, code, _, _ in why] == [
        (1, "failed", "4000002")
    ]


def _section_queries(heading: str) -> dict[str, str]:
    section = README.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sql\n(.*?)```", section, re.DOTALL).group(1)
    titled = (chunk.strip().partition("\n") for chunk in block.split("\n\n"))
    return {title.removeprefix("-- ").strip(): sql.strip().rstrip(";") for title, _, sql in titled}


def test_paying_once_per_picture_s_queries_find_the_copy_and_its_payer(night):
    queries = _section_queries("Paying once per picture")
    files, db, twin = night["files"], night["db"], night["twin"]
    (twin_from,) = (p for p in files if p != twin and sha256_file(p) == sha256_file(twin))

    ((copy, paid_by, job),) = query(db, queries["Copies and the item that paid for each"])
    assert ({copy, paid_by}, job) == ({str(twin), str(twin_from)}, JOB)
    assert query(db, queries["Calls saved by copies, per job"]) == [(JOB, 1)]
    assert query(db, queries["Files of the same content"]) == [(sha256_file(twin), 2)]


def _failure_table() -> dict[str, str]:
    """README's result-code table: each code it names -> the class its row gives."""
    start = README.index("| resultCode (NHN's key) | class: what happens |")
    rows = {}
    for line in README[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        codes, outcome = line.strip("|").split("|", 1)
        verdict = re.search(r"\*\*([^*]+)\*\*", outcome).group(1)
        for code in re.findall(r"(?<![\w.])-?\d+(?![\w.])", re.sub(r"\([^)]*\)", "", codes)):
            rows[code] = verdict
    return rows


CLASS_WORDS = {
    "done": Verdict.DONE,
    "done without a plate": Verdict.NO_PLATE,
    "retry": Verdict.RETRY,
    "throttle": Verdict.THROTTLE,
    "permanent": Verdict.PERMANENT,
    "fatal": Verdict.FATAL,
}


def test_readme_s_failure_table_is_the_code_s_table():
    table = _failure_table()

    assert set(table) == {str(code) for code in RESULT_CODES}
    for code, word in table.items():
        assert CLASS_WORDS[word] is judge(code), (code, word)


def _run_options_table() -> str:
    return README.split("Options of `run`:", 1)[1].split("Exit codes", 1)[0]


def test_every_option_of_run_is_in_the_readme_table():
    table = _run_options_table()
    (_, run) = next(c for c in commands() if c[0] == "run")
    for param in run.params:
        for opt in param.opts:
            if opt.startswith("--") and opt != "--help":
                assert f"`{opt}" in table, f"README's table of `run` options lacks {opt}"


def environment_read() -> set[str]:
    """Every environment variable platepipe reads: click options' envvar, and the names that
    pipeline/ passes to os.environ / os.getenv (literals or module constants)."""
    names = set()
    for _, command in [("", cli), *commands()]:
        for param in command.params:
            envvar = param.envvar
            names.update([envvar] if isinstance(envvar, str) else envvar or [])
    package = ROOT / "pipeline"
    call = re.compile(r"os\.(?:environ\.get|getenv|environ\[|environ\.setdefault)\(?\s*([\w\"']+)")
    for source in package.rglob("*.py"):  # subpackages too (pipeline/store/)
        parts = source.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for argument in call.findall(source.read_text(encoding="utf-8")):
            if argument[0] in "\"'":
                names.add(argument.strip("\"'"))
            else:  # a constant of the module that reads it
                names.add(getattr(importlib.import_module(module), argument))
    return names


def test_every_environment_variable_read_is_in_the_readme_and_no_other():
    section = README.split("**Environment variables.**", 1)[1].split("\n\n**", 1)[0]
    documented = set(re.findall(r"`((?:NHN_OCR|PLATEPIPE)_[A-Z0-9_]+)`", section))

    assert environment_read() == documented


def test_no_command_invents_variables_from_its_option_names():
    for name, command in [("platepipe", cli), *commands()]:
        settings = command.context_settings or {}
        assert "auto_envvar_prefix" not in settings, name
