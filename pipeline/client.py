"""The NHN Vehicle Plate OCR API: build the request, parse the answer.

Every call ends in exactly one `Answer`, whose code (NHN's resultCode, `http_NNN` or a transport
reason) pipeline/verdicts.py gives its meaning. Nothing here raises for a single call's failure,
and no text that leaves this module can carry the secret key.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
import time
import uuid
from typing import Any

import aiohttp

from pipeline.config import ApiSettings
from pipeline.outcomes import Answer, Plate, Recognition
from pipeline.verdicts import Verdict, judge, of_result_code

API_PATH = "/v1.0/appkeys/{app_key}/vehicle-plate"

BOX_KEYS = ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4")
MESSAGE_MAX_CHARS = 500
# aiohttp warns about (and under -W error refuses) a raw bytes body larger than this.
INLINE_BODY_MAX_BYTES = 1024 * 1024
PLATE_VALUE_MAX_CHARS = 64


def parse_answer(
    http_status: int, body: bytes, latency_s: float, retry_after: str | None = None
) -> Answer:
    """Turn one HTTP answer into an `Answer`; pure, so every odd body can be unit-tested."""
    if http_status != 200:
        code = f"http_{http_status}"
        message = _snippet(body)
        if judge(code) is Verdict.FATAL:
            message = f"the endpoint answered HTTP {http_status}: check --endpoint and the keys"
        return Answer(code, message, latency_s, http_status, None, _seconds(retry_after))
    try:
        doc = json.loads(body)
        header = doc["header"]
        code = int(header["resultCode"])
        message = _text(header.get("resultMessage"), MESSAGE_MAX_CHARS) or ""
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        reason = f"not the API's JSON ({type(exc).__name__}): {_snippet(body)}"
        return Answer("bad_response", reason, latency_s, http_status)
    verdict = of_result_code(code)
    if verdict is Verdict.NO_PLATE:
        # A result without a plate: kept as a recognition (whatever `result` it carries
        # besides), so SQL tells a plate-less image from one never sent.
        result = doc.get("result") if isinstance(doc.get("result"), dict) else {}
        recognition = _parse_result({**result, "values": [], "boxes": []}, body, code)
        return Answer(str(code), message, latency_s, http_status, recognition)
    if verdict is not Verdict.DONE:
        return Answer(str(code), message, latency_s, http_status)
    try:
        recognition = _parse_result(doc["result"], body)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        reason = f"success without a usable result ({type(exc).__name__}): {_snippet(body)}"
        return Answer("bad_response", reason, latency_s, http_status)
    return Answer("0", message, latency_s, http_status, recognition)


def _parse_result(result: dict[str, Any], body: bytes, result_code: int = 0) -> Recognition:
    values = result.get("values") or []
    boxes = result.get("boxes") or []
    # values[i] belongs to boxes[i]. A value without a box is kept without coordinates; a box
    # without a value reads nothing and stays only in the raw response.
    plates = tuple(
        Plate(
            value=_text(v.get("value"), PLATE_VALUE_MAX_CHARS),
            conf=_conf(v.get("conf")),
            box=_box(boxes[i]) if i < len(boxes) else None,
        )
        for i, v in enumerate(values)
    )
    return Recognition(
        file_type=_text(result.get("fileType"), 8),
        resolution=_text(result.get("resolution"), 16),
        plates=plates,
        raw=_clean(body.decode("utf-8", errors="replace")),
        result_code=result_code,
    )


# Whatever a server sends must be storable: no NUL (PostgreSQL text refuses it), no control
# characters, lengths within the columns, numbers within their types.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
INT32_MAX = 2**31 - 1


def _clean(text: str) -> str:
    return _CONTROL.sub("", text)


def _text(value: Any, max_chars: int) -> str | None:
    return None if value is None else _clean(str(value))[:max_chars]


def _conf(value: Any) -> float | None:
    try:
        conf = float(value)
    except (TypeError, ValueError):
        return None
    return conf if math.isfinite(conf) else None


def _box(box: dict[str, Any]) -> tuple[int, int, int, int, int, int, int, int] | None:
    try:
        corners = tuple(int(box[k]) for k in BOX_KEYS)
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    if any(abs(c) > INT32_MAX for c in corners):
        return None
    return corners  # type: ignore[return-value]


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After in seconds; its HTTP-date form is rare enough from gateways to ignore."""
    try:
        return max(float(retry_after), 0.0) if retry_after else None
    except ValueError:
        return None


def _snippet(body: bytes) -> str:
    return _clean(body[:200].decode("utf-8", errors="replace"))


class ImageForm:
    """The request body: a multipart/form-data form of one file field, `image`, as curl's
    `-F 'image=@sample.png'` sends it.

    Framed here rather than by aiohttp's FormData, which builds a multipart writer for every
    request and sends each of its pieces with a system call of its own: this body is one
    buffer, which aiohttp sends together with the request headers. The form never varies but
    for the file's bytes and our own file name, so nothing in it needs quoting.
    """

    def __init__(self) -> None:
        self.boundary = uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._heads: dict[tuple[str, str], bytes] = {}  # one per file type, framed once

    def body(self, data: bytes, filename: str, content_type: str) -> bytes | io.BytesIO:
        head = self._heads.get((filename, content_type))
        if head is None:
            head = self._heads[filename, content_type] = (
                f"--{self.boundary}\r\n"
                f'Content-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                f"Content-Type: {content_type}\r\n\r\n"
            ).encode()
        body = b"".join((head, data, self._tail))
        return body if len(body) <= INLINE_BODY_MAX_BYTES else io.BytesIO(body)


class NhnClient:
    """One shared aiohttp session posting images to the endpoint; use as `async with`."""

    def __init__(self, api: ApiSettings, *, connections: int) -> None:
        self._api = api
        self.endpoint = api.endpoint
        self._url = api.endpoint.rstrip("/") + API_PATH.format(app_key=api.app_key)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._form = ImageForm()
        self._form_headers = {"Content-Type": self._form.content_type}

    async def __aenter__(self) -> NhnClient:
        timeout = aiohttp.ClientTimeout(
            total=self._api.timeout_s, sock_connect=self._api.connect_timeout_s
        )
        connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=self._connections)
        self._session = aiohttp.ClientSession(
            timeout=timeout,
            connector=connector,
            headers={"Authorization": self._api.secret_key.reveal()},
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def recognize(self, data: bytes, filename: str, content_type: str) -> Answer:
        assert self._session is not None, "use NhnClient as `async with`"
        body = self._form.body(data, filename, content_type)
        started = time.monotonic()
        try:
            async with self._session.post(
                self._url, data=body, headers=self._form_headers
            ) as response:
                body = await response.read()
                latency_s = time.monotonic() - started
                retry_after = response.headers.get("Retry-After")
                answer = parse_answer(response.status, body, latency_s, retry_after)
                return self._redacted(answer)
        except TimeoutError:
            return self._transport("timeout", "no answer in time", started)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ConnectionRefusedError):
                return self._transport("connection_refused", f"{exc}", started, reached=False)
            return self._transport("connection", f"{type(exc).__name__}: {exc}", started)
        except aiohttp.ClientConnectionError as exc:
            return self._transport("connection", f"{type(exc).__name__}: {exc}", started)
        except aiohttp.ClientError as exc:
            return self._transport("client_error", f"{type(exc).__name__}: {exc}", started)

    def _redacted(self, answer: Answer) -> Answer:
        """A gateway page may echo our request headers, the secret among them."""
        secret = self._api.secret_key.reveal()
        if secret in answer.message:
            answer = dataclasses.replace(answer, message=self.redact(answer.message))
        recognition = answer.recognition
        if recognition is not None and secret in recognition.raw:
            recognition = dataclasses.replace(recognition, raw=self.redact(recognition.raw))
            answer = dataclasses.replace(answer, recognition=recognition)
        return answer

    def redact(self, text: str) -> str:
        """`text` made safe to log or store: the secret key replaced by `***`."""
        return self._api.secret_key.redact(text)

    def _transport(
        self, code: str, message: str, started: float, *, reached: bool = True
    ) -> Answer:
        message = self.redact(message)[:MESSAGE_MAX_CHARS]
        return Answer(code, message, time.monotonic() - started, reached=reached)
