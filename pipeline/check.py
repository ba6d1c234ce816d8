"""`platepipe check`: the database, the endpoint and the keys verified before a night, at the
cost of one request at most, and with nothing written anywhere.

The keys can only be verified by the API itself, so one request is unavoidable. It carries an
empty image: NHN checks the keys first (4010001 when they are wrong), then answers 4000004
UPLOADED_FILE_IS_EMPTY, recognizing nothing. Whether NHN counts that request against the
quota is NHN's business; we count it as one call, the fewest possible, and say so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline import db
from pipeline.client import NhnClient
from pipeline.config import ApiSettings
from pipeline.errors import PipelineError
from pipeline.records import Answer
from pipeline.store import Store
from pipeline.verdicts import Verdict, result_key

COST_NOTE = "cost: 1 request with an empty image (nothing recognized; NHN may count it as a call)"
NO_COST_NOTE = "cost: nothing; no request reached the API"


@dataclass(frozen=True)
class Finding:
    ok: bool
    line: str

    def __str__(self) -> str:
        return f"{'ok' if self.ok else 'FAILED'}: {self.line}"


async def check_database(url: str) -> Finding:
    """Reachable, and its schema platepipe's (or none yet); nothing created or upgraded."""
    shown = db.display_url(url)
    try:
        parsed = db.parse_url(url)
    except PipelineError as exc:
        return Finding(False, f"database {shown}: {exc}")
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if not os.path.exists(path):
            folder = os.path.dirname(os.path.abspath(path))
            if os.access(folder, os.W_OK):
                return Finding(True, f"database {shown}: not there yet; the first run creates it")
            return Finding(False, f"database {shown}: absent, and {folder} is not writable")
    try:
        async with Store.connect(url, migrate=False) as store:
            revision = await store.schema_revision()
    except PipelineError as exc:
        return Finding(False, str(exc))
    if revision is None:
        return Finding(True, f"database {shown}: reachable, no schema yet; the first run makes it")
    if revision == db.HEAD_REVISION:
        return Finding(True, f"database {shown}: reachable, schema at revision {revision}")
    return Finding(
        True,
        f"database {shown}: reachable, schema at revision {revision}; "
        f"the next run upgrades it to {db.HEAD_REVISION}",
    )


async def check_api(api: ApiSettings) -> tuple[list[Finding], bool]:
    """One request with an empty image: the endpoint answers, and takes the keys. The
    findings, and whether the request reached the API (an HTTP answer came back)."""
    async with NhnClient(api, connections=1) as client:
        answer = await client.recognize(b"", "image.jpg", "image/jpeg")
    return _judge(api, answer), answer.http_status is not None


def _judge(api: ApiSettings, answer: Answer) -> list[Finding]:
    where = f"endpoint {api.endpoint}"
    said = f"{answer.code} {answer.message}".strip()
    # An answer about the image itself: the keys were accepted to get that far.
    about_the_image = answer.verdict is Verdict.PERMANENT and result_key(answer.code)
    if about_the_image or answer.verdict.recognized:
        return [
            Finding(True, f"{where}: answered in {answer.latency_s:.2f}s"),
            Finding(True, f"keys: accepted (the empty test image drew {said})"),
        ]
    if answer.verdict is Verdict.FATAL:
        if result_key(answer.code) is None:  # HTTP, TLS, DNS, a redirect: not the keys
            return [Finding(False, f"{where}: {answer.message}")]
        return [
            Finding(True, f"{where}: answered in {answer.latency_s:.2f}s"),
            Finding(False, f"keys: refused ({said}); check NHN_OCR_APP_KEY, NHN_OCR_SECRET_KEY"),
        ]
    return [Finding(False, f"{where}: no usable answer ({said}); try again, or check it")]


async def run_check(url: str, api: ApiSettings) -> tuple[list[str], int]:
    """What to print, and the exit code: 0 when all is ok, else 1."""
    api_findings, reached = await check_api(api)
    findings = [await check_database(url), *api_findings]
    lines = [*map(str, findings), COST_NOTE if reached else NO_COST_NOTE]
    return lines, 0 if all(f.ok for f in findings) else 1
