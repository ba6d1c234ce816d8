"""The NHN Vehicle Plate OCR API: build the request, send it, read the answer (pipeline/answers.py
parses it).

Every call ends in exactly one `Answer`, whose code (NHN's resultCode, `http_NNN` or a transport
reason) pipeline/verdicts.py gives its meaning; `transport_failure` is where aiohttp's errors
become those reasons (`tls`, `unknown_host`, `connection_refused`, ...), and a redirect is never
followed (`redirect`). Nothing here raises for a single call's failure, no answer can cost more
than BODY_MAX_BYTES of memory, and no text that leaves this module can carry the secret key, a
control character or a lone surrogate.
"""

from __future__ import annotations

import errno
import io
import socket
import time
import uuid
import zlib
from types import SimpleNamespace
from urllib.parse import urlsplit

import aiohttp
from aiohttp import hdrs

from pipeline.answers import MESSAGE_MAX_CHARS, Scrubber, bad_response, parse_answer
from pipeline.config import ApiSettings, ssl_context
from pipeline.records import Answer

API_PATH = "/v1.0/appkeys/{app_key}/vehicle-plate"

# aiohttp warns about (and under -W error refuses) a raw bytes body larger than this.
INLINE_BODY_MAX_BYTES = 1024 * 1024
# A plate answer is a few hundred bytes; a body past this is cut off and counts as a bad one.
BODY_MAX_BYTES = 1024 * 1024
READ_CHUNK_BYTES = 64 * 1024
ACCEPTED_ENCODINGS = frozenset({"identity", "gzip", "x-gzip", "deflate"})
ZLIB_GZIP_OR_ZLIB_WBITS = 32 + zlib.MAX_WBITS  # a gzip or a zlib stream, told by its header
DNS_ERRORS = tuple(filter(None, [getattr(aiohttp, "ClientConnectorDNSError", None)]))  # 3.10+


async def read_capped(response: aiohttp.ClientResponse) -> tuple[bytes, str | None]:
    """The body, inflated per its Content-Encoding, at most BODY_MAX_BYTES of it; and why it is
    not whole (over the cap, an encoding we did not ask for, a broken stream) or None.

    Streams: memory stays near one chunk plus the cap, whatever the server sends. aiohttp's own
    decompression is off (`auto_decompress=False`): it would inflate a gzip bomb whole.
    """
    declared = response.content_length
    if declared is not None and declared > BODY_MAX_BYTES:
        return b"", f"a body of {declared} bytes, over the {BODY_MAX_BYTES}-byte cap"
    encoding = response.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if encoding not in ACCEPTED_ENCODINGS:
        return b"", f"a body in an encoding that was not asked for: {encoding[:40]}"
    inflater = None if encoding == "identity" else zlib.decompressobj(ZLIB_GZIP_OR_ZLIB_WBITS)
    over_cap = f"a body over the {BODY_MAX_BYTES}-byte cap"
    body = bytearray()
    received = 0
    while chunk := await response.content.read(READ_CHUNK_BYTES):
        received += len(chunk)
        if received > BODY_MAX_BYTES:
            return bytes(body[:BODY_MAX_BYTES]), over_cap
        if inflater is not None:
            try:
                # At most one byte past the cap: a bomb never inflates further than that.
                chunk = inflater.decompress(chunk, BODY_MAX_BYTES + 1 - len(body))
            except zlib.error:
                return bytes(body), f"a {encoding} body that does not inflate"
            if inflater.unconsumed_tail:
                return bytes(body), over_cap
        body += chunk
        if len(body) > BODY_MAX_BYTES:
            return bytes(body[:BODY_MAX_BYTES]), over_cap
    if inflater is not None and not inflater.eof:
        return bytes(body), f"a {encoding} body cut short"
    return bytes(body), None


def transport_failure(exc: Exception, endpoint: str) -> tuple[str, str]:
    """The code and the message for an aiohttp exception: the one place where transport errors
    are told apart (as httpx's map_httpcore_exceptions); verdicts.py says what each code means."""
    host = urlsplit(endpoint).hostname or endpoint
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        reason = getattr(error, "verify_message", None) or str(error)
        return (
            "tls",
            f"the certificate of {endpoint} does not verify ({reason}): if a private CA signed "
            "it, pass that CA's PEM file with --ca-bundle",
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        reason = getattr(exc.os_error, "reason", None) or str(exc.os_error)
        return (
            "tls",
            f"TLS with {endpoint} failed ({reason}): check the endpoint's scheme (http or "
            "https) and --ca-bundle",
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(exc, DNS_ERRORS) or isinstance(os_error, socket.gaierror):
            if os_error.errno == socket.EAI_AGAIN:
                # The resolver did not answer (a DNS server down): not a wrong name. Retried.
                return "connection", f"cannot resolve {host} for now"
            return "unknown_host", f"unknown host {host}: check --endpoint {endpoint}"
        if isinstance(os_error, ConnectionRefusedError) or os_error.errno == errno.ECONNREFUSED:
            return "connection_refused", f"connection refused by {endpoint}"
        reason = os_error.strerror or str(os_error) or type(os_error).__name__
        return "connection", f"cannot connect to {endpoint}: {reason}"
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError too
        return "timeout", f"no answer in time ({type(exc).__name__})"
    if isinstance(exc, aiohttp.ClientConnectionError):
        return "connection", f"{type(exc).__name__}: {exc}"
    return "client_error", f"{type(exc).__name__}: {exc}"


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
        connector = aiohttp.TCPConnector(
            limit=self._connections,
            limit_per_host=self._connections,
            ssl=ssl_context(self._api.ca_bundle) or True,
        )
        # Told when a request's headers have left: a failure before that cost no call.
        tracing = aiohttp.TraceConfig()
        tracing.on_request_headers_sent.append(_mark_sent)
        self._session = aiohttp.ClientSession(
            timeout=timeout,
            connector=connector,
            headers={
                "Authorization": self._api.secret_key.reveal(),
                # Only what read_capped inflates itself, within the cap.
                "Accept-Encoding": "gzip, deflate",
            },
            auto_decompress=False,
            trace_configs=[tracing],
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def recognize(self, data: bytes, filename: str, content_type: str) -> Answer:
        assert self._session is not None, "use NhnClient as `async with`"
        body = self._form.body(data, filename, content_type)
        request = SimpleNamespace(sent=False)
        started = time.monotonic()
        try:
            async with self._session.post(
                self._url,
                data=body,
                headers=self._form_headers,
                allow_redirects=False,
                trace_request_ctx=request,
            ) as response:
                return await self._answer(response, started)
        except (aiohttp.ClientError, TimeoutError) as exc:
            code, message = transport_failure(exc, self._api.endpoint)
            message = self.redact(message)[:MESSAGE_MAX_CHARS]
            latency_s = time.monotonic() - started
            return Answer(code, message, latency_s, reached=request.sent)

    async def _answer(self, response: aiohttp.ClientResponse, started: float) -> Answer:
        secret = self._api.secret_key
        if 300 <= response.status < 400:
            body, problem = b"", None  # a redirect's body says nothing we take
            response.close()
        else:
            body, problem = await read_capped(response)
            if problem is not None:
                response.close()  # never read the rest, and never reuse the connection
        latency_s = time.monotonic() - started
        if problem is not None and response.status == 200:
            return bad_response(problem, body, latency_s, response.status, Scrubber(secret))
        return parse_answer(
            response.status,
            body,
            latency_s,
            response.headers.get(hdrs.RETRY_AFTER),
            location=response.headers.get(hdrs.LOCATION),
            secret=secret,
        )

    def redact(self, text: str) -> str:
        """`text` made safe to log or store: the secret key replaced by `***`."""
        return self._api.secret_key.redact(text)


async def _mark_sent(
    _session: aiohttp.ClientSession,
    context: SimpleNamespace,
    _params: aiohttp.TraceRequestHeadersSentParams,
) -> None:
    context.trace_request_ctx.sent = True
