"""Logging for people (plain lines on stderr) or for log shippers (`--log-json`: one JSON
object a line), with the secret key scrubbed from every record as a last line of defence."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from pipeline.config import Secret

# Not an operator's business, not even with -v: aiosqlite logs every statement it runs (1,400
# lines for a small job), PIL every chunk of every image it opens. -v means platepipe's own
# detail: one line per API call.
QUIET_LOGGERS = ("aiohttp.access", "alembic", "aiosqlite", "asyncio", "PIL")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class RedactSecret(logging.Filter):
    def __init__(self, secret: Secret) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.secret.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_json_mode = False


def setup(*, verbose: bool = False, as_json: bool = False) -> None:
    global _json_mode
    _json_mode = as_json
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def redact_everywhere(secret: Secret) -> None:
    """Scrub `secret` from every record any handler of the root logger emits."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecret(secret))


def quiet() -> None:
    """Only warnings and errors: what `--quiet` leaves of the log."""
    logging.getLogger().setLevel(logging.WARNING)


def error_line(message: str) -> None:
    """The one line a failed command ends with: plain on stderr, or JSON with --log-json so
    that a log shipper reading stderr never meets a line it cannot parse."""
    if _json_mode:
        logging.getLogger("platepipe").error(message)
    else:
        sys.stderr.write(f"platepipe: error: {message}\n")
