"""The local HTTP server: each request becomes an API Gateway REST proxy event for the handler.

The same `lambda_handler` answers here as in AWS, so what works locally is what deploys.

uvicorn (on h11) speaks HTTP. What it does not guard on its own is guarded here: how long a
request may take to arrive (it has no such timeout) and how large it may be (its h11 buffer
limit holds only for a head that arrives in pieces). And what it would answer itself in plain
text (a malformed request) is answered, like everything else, in the API's JSON error shape.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import logging
import socket
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from kefu.models import ErrorResponse
from kefu.request_body import MAX_BODY_BYTES

WEB_ROOT = Path(__file__).parent / "web"
# The pages served as they are: the customer's chat, and the agents' desk.
PAGES = {
    "/": "index.html",
    "/index.html": "index.html",
    "/agent": "agent.html",
    "/agent.html": "agent.html",
}

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class ServerLimits:
    """How long a request may take to arrive, how large it may be, and how many turns are
    answered at once."""

    # A request's line and headers, from the connection (or the previous answer on it).
    head_timeout_s: float = 10.0
    # Its body, from the end of its head.
    body_timeout_s: float = 10.0
    # An idle kept-alive connection is closed after this.
    keep_alive_s: int = 5
    max_url_bytes: int = 8 * 1024
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = MAX_BODY_BYTES  # what the chat function reads
    # Connections the kernel completes before the server accepts them: a hundred customers
    # arriving at once are all queued, none dropped (and reset).
    backlog: int = 1024
    # Turns answered at once: the handler blocks (embedding on the CPU, a model's answer).
    handler_threads: int = 128
    # On shutdown, answers in progress get this long to finish.
    shutdown_timeout_s: int = 10


def error_body(code: str, message: str) -> bytes:
    """The API's error shape, as `kefu.api` answers it."""
    return json.dumps(ErrorResponse.of(code, message)).encode()


class LocalContext:
    """The parts of the Lambda context object that Powertools reads."""

    function_name = "kefu-chat-local"
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:local:000000000000:function:kefu-chat-local"

    def __init__(self) -> None:
        self.aws_request_id = uuid.uuid4().hex

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


def proxy_event(
    *, method: str, raw_path: str, headers: dict[str, str], body: bytes | None
) -> dict[str, Any]:
    """An API Gateway REST API (v1) proxy integration event, as the `{proxy+}` resource sends."""
    url = urlsplit(raw_path)
    query = parse_qs(url.query, keep_blank_values=True)
    text: str | None = None
    encoded = False
    if body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode(), True
    request_id = uuid.uuid4().hex
    return {
        "resource": "/{proxy+}",
        "path": url.path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {key: [value] for key, value in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": url.path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": url.path,
            "stage": "local",
            "requestId": request_id,
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


# --- the application: a request in, the handler's answer out -------------------------------


@dataclass
class Answer:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    @classmethod
    def error(cls, status: HTTPStatus, code: str, message: str, *, close: bool = False) -> Answer:
        body = error_body(code, message)
        headers = [(b"content-type", b"application/json")]
        if close:
            headers.append((b"connection", b"close"))
        return cls(status.value, body, headers)


class LambdaProxy:
    """The ASGI application: a request checked against the limits, read in full, and answered
    by the Lambda handler on a worker thread (one thread per request, from start to end, as
    `kefu.api.ConcurrentRestResolver` expects), or a page of the web folder."""

    def __init__(self, handler: LambdaHandler, limits: ServerLimits, pool: ThreadPoolExecutor):
        self.handler = handler
        self.limits = limits
        self.pool = pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan events are sent, and WebSockets are not served
        try:
            answer = await self._answer(scope, receive)
        except Exception:
            # The Lambda runtime would answer a 502; uvicorn would answer a text/plain 500.
            from kefu.observability import logger

            logger.exception("The local server could not answer a request")
            answer = Answer.error(
                HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error", "The request failed."
            )
        if answer is None:
            return  # the client went away
        headers = [*answer.headers, (b"content-length", str(len(answer.body)).encode())]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})

    async def _answer(self, scope: Scope, receive: Receive) -> Answer | None:
        limits = self.limits
        if scope["http_version"] not in ("1.0", "1.1"):
            return Answer.error(
                HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                "http_version_not_supported",
                "This server speaks HTTP/1.1 (and 1.0).",
                close=True,
            )
        query: bytes = scope["query_string"]
        target: bytes = scope["raw_path"] + (b"?" + query if query else b"")
        if len(target) > limits.max_url_bytes:
            return _uri_too_long(limits)
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        if sum(len(name) + len(value) + 4 for name, value in raw_headers) > limits.max_header_bytes:
            return _headers_too_large(limits)
        # Header bytes as http.server read them; uvicorn gives their names in lower case.
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in raw_headers}
        declared = headers.get("content-length")
        # A larger body is not read: uvicorn discards what follows, as long as the next
        # request's head may take (the connection is then closed).
        if declared is not None and int(declared) > limits.max_body_bytes:
            return _payload_too_large(limits)
        try:
            async with asyncio.timeout(limits.body_timeout_s):
                body = await self._read_body(receive)
        except TimeoutError:
            return Answer.error(
                HTTPStatus.REQUEST_TIMEOUT,
                "request_timeout",
                f"The body did not arrive within {limits.body_timeout_s:g} s.",
                close=True,
            )
        if isinstance(body, Answer) or body is None:
            return body

        method: str = scope["method"]
        page = PAGES.get(scope["raw_path"].decode("ascii"))
        if page and method in ("GET", "HEAD"):
            html = (WEB_ROOT / page).read_bytes()
            return Answer(200, html, [(b"content-type", b"text/html; charset=utf-8")])
        event = proxy_event(
            method=method, raw_path=target.decode("ascii"), headers=headers, body=body or None
        )
        return await self._invoke(event)

    async def _read_body(self, receive: Receive) -> bytes | Answer | None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.limits.max_body_bytes:
                return _payload_too_large(self.limits)  # a chunked body, grown too long
            if not message.get("more_body", False):
                return bytes(body)

    async def _invoke(self, event: dict[str, Any]) -> Answer:
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # each turn starts from the server's context
        result = await loop.run_in_executor(
            self.pool, context.run, self.handler, event, LocalContext()
        )
        payload = result.get("body") or ""
        raw = base64.b64decode(payload) if result.get("isBase64Encoded") else payload.encode()
        merged: dict[str, list[str]] = {
            key.lower(): [value] for key, value in (result.get("headers") or {}).items()
        }
        for key, values in (result.get("multiValueHeaders") or {}).items():
            merged[key.lower()] = list(values)
        headers = [
            (key.encode("latin-1"), str(value).encode("latin-1"))
            for key, values in merged.items()
            if key not in ("content-length", "connection", "transfer-encoding")
            for value in values
        ]
        return Answer(int(result["statusCode"]), raw, headers)


def _uri_too_long(limits: ServerLimits) -> Answer:
    return Answer.error(
        HTTPStatus.REQUEST_URI_TOO_LONG,
        "uri_too_long",
        f"The URL may be at most {limits.max_url_bytes} bytes.",
    )


def _headers_too_large(limits: ServerLimits) -> Answer:
    return Answer.error(
        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        f"The headers may be at most {limits.max_header_bytes} bytes.",
    )


def _payload_too_large(limits: ServerLimits) -> Answer:
    return Answer.error(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        "payload_too_large",
        f"The body may be at most {limits.max_body_bytes} bytes.",
    )


# --- the protocol: what uvicorn answers before the application is called ------------------


class LocalConfig(uvicorn.Config):
    """uvicorn's settings for the local server, with the limits its protocol reads."""

    def __init__(self, app: LambdaProxy, *, limits: ServerLimits) -> None:
        super().__init__(
            app,
            http=KefuHttpProtocol,
            ws="none",
            lifespan="off",
            interface="asgi3",
            loop="asyncio",
            # Quiet, as http.server was here: the handler's structured logs record every turn,
            # and a malformed request is answered, not worth a warning. Errors still show.
            log_config=None,
            log_level=logging.ERROR,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            headers=[("server", "kefu-local")],
            backlog=limits.backlog,
            timeout_keep_alive=limits.keep_alive_s,
            timeout_graceful_shutdown=limits.shutdown_timeout_s,
            # A head arriving in pieces is buffered up to this much (then answered 414 or 431).
            h11_max_incomplete_event_size=limits.max_url_bytes + limits.max_header_bytes,
        )
        self.limits = limits


class KefuHttpProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request's head, and its own answers
    (to a request h11 cannot parse, or one whose head is late) in the JSON error shape."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        assert isinstance(config, LocalConfig)
        self.limits = config.limits
        self.head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:
            # A request's head arrived: the application reads its body, under its own deadline.
            self._disarm_head_deadline()

    def on_response_complete(self) -> None:
        # Armed before uvicorn starts on a request that is already buffered (which disarms it).
        self._arm_head_deadline()
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this from its `except h11.RemoteProtocolError:`, the error being handled.
        error = sys.exc_info()[1]
        hint = error.error_status_hint if isinstance(error, h11.RemoteProtocolError) else 400
        if hint == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
            # h11's buffer for an unfinished head is full: of the request line alone, if no
            # line has ended yet.
            if b"\n" not in self.conn.trailing_data[0]:
                self._send_error(_uri_too_long(self.limits))
            else:
                self._send_error(_headers_too_large(self.limits))
            return
        reason = str(error)
        message = "The request is not valid HTTP/1.1"
        message += f" ({reason})." if error is not None and len(reason) <= 80 else "."
        self._send_error(Answer.error(HTTPStatus.BAD_REQUEST, "bad_request", message))

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self.head_deadline = self.loop.call_later(
            self.limits.head_timeout_s, self._head_deadline_passed
        )

    def _disarm_head_deadline(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_deadline_passed(self) -> None:
        self.head_deadline = None
        if self.transport.is_closing():
            return
        if self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE:
            if self.conn.trailing_data[0]:
                self._send_error(
                    Answer.error(
                        HTTPStatus.REQUEST_TIMEOUT,
                        "request_timeout",
                        "The request's head did not arrive within "
                        f"{self.limits.head_timeout_s:g} s.",
                    )
                )
            else:
                self.transport.close()  # an idle connection: nothing was asked
        elif self.conn.our_state in (h11.DONE, h11.MUST_CLOSE):
            self.transport.close()  # answered; the rest of a body it was sent is not read

    def _send_error(self, answer: Answer) -> None:
        """Answer and close, outside any application cycle."""
        headers = [
            *self.server_state.default_headers,
            *answer.headers,
            (b"content-length", str(len(answer.body)).encode()),
            (b"connection", b"close"),
        ]
        status = HTTPStatus(answer.status)
        try:
            output = b"".join(
                self.conn.send(event) or b""
                for event in (
                    h11.Response(status_code=status, headers=headers, reason=status.phrase),
                    h11.Data(data=answer.body),
                    h11.EndOfMessage(),
                )
            )
        except h11.LocalProtocolError:
            output = b""  # in the middle of another answer: nothing more can be said
        if output:
            self.transport.write(output)
        self.transport.close()


# --- the server ------------------------------------------------------------------------------


class LocalServer:
    """The local server: listening from its construction (connections wait in the backlog),
    serving on the thread that calls `serve_forever` until `shutdown`. Used once."""

    def __init__(self, host: str, port: int, *, handler: LambdaHandler, limits: ServerLimits):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, backlog=limits.backlog)
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        self.limits = limits
        self._pool = ThreadPoolExecutor(limits.handler_threads, thread_name_prefix="kefu-turn")
        self._server = uvicorn.Server(
            LocalConfig(LambdaProxy(handler, limits, self._pool), limits=limits)
        )
        self._started = threading.Event()
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        """Serve until `shutdown` (or, on the main thread, SIGINT or SIGTERM)."""
        self._started.set()
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop accepting, let answers in progress finish, and wait for `serve_forever`."""
        self._server.should_exit = True
        if self._started.is_set():
            self._stopped.wait()

    def server_close(self) -> None:
        self.socket.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def make_server(
    host: str,
    port: int,
    *,
    limits: ServerLimits | None = None,
    handler: LambdaHandler | None = None,
) -> LocalServer:
    """The local server for the chat Lambda's handler (or `handler`), bound to host:port."""
    if handler is None:
        # Imported here, once, before any request: concurrent first imports of one package
        # can fail with a half-initialised module.
        from functions.chat.handler import lambda_handler

        handler = lambda_handler
    return LocalServer(host, port, handler=handler, limits=limits or ServerLimits())
