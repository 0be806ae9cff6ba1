"""The local server under many customers at once (what `make load` found), and under clients
that do not speak HTTP as they should (what a hostile-client test found): every one gets an
answer, in the API's JSON error shape, and none holds the server."""

from __future__ import annotations

import base64
import http.client
import io
import json
import select
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from local.server import LambdaHandler, LocalServer, ServerLimits, make_server

CUSTOMERS = 24
TURNS = 4
CONNECTIONS = 100
# Short enough for the tests, long enough for a request sent at once to arrive whole.
QUICK = ServerLimits(head_timeout_s=0.5, body_timeout_s=0.5)
# Answered well within this, or the server is taken to hang.
ANSWER_LIMIT_S = 3.0


class Servers:
    """Local servers on free loopback ports: made (listening, not yet serving), then started
    on a thread of their own; each stopped and closed at the end of the test."""

    def __init__(self) -> None:
        self.made: list[LocalServer] = []
        self.threads: list[threading.Thread] = []

    def make(
        self, limits: ServerLimits | None = None, handler: LambdaHandler | None = None
    ) -> LocalServer:
        server = make_server("127.0.0.1", 0, limits=limits, handler=handler)
        self.made.append(server)
        return server

    def start(self, server: LocalServer) -> LocalServer:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.threads.append(thread)
        return server

    def close(self) -> None:
        for server in self.made:
            server.shutdown()
            server.server_close()
        for thread in self.threads:
            thread.join(timeout=15)
            assert not thread.is_alive(), "a server did not stop"


@pytest.fixture
def servers(configured: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Servers]:
    """Over the mini KB, as `python -m local` runs it (metrics off, the service built first)."""
    from kefu.bootstrap import get_chat_service

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    get_chat_service()
    made = Servers()
    yield made
    made.close()


@pytest.fixture
def server(servers: Servers) -> LocalServer:
    return servers.start(servers.make())


@pytest.fixture
def quick_server(servers: Servers) -> LocalServer:
    """A server that waits half a second for a request's head, and as long for its body."""
    return servers.start(servers.make(QUICK))


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    seconds: float

    def json(self) -> Any:
        assert self.headers.get_content_type() == "application/json", self.headers
        return json.loads(self.body)

    def error_code(self) -> str:
        """The code of the API's error shape, checked whole."""
        error = self.json()
        assert set(error) == {"error"}, error
        assert set(error["error"]) == {"code", "message"}, error
        assert isinstance(error["error"]["message"], str)
        assert error["error"]["message"]
        return str(error["error"]["code"])


class _KeptOpen(io.BufferedReader):
    """A connection's reader that `http.client` cannot close after one response."""

    def close(self) -> None:
        pass


class _Responses:
    """Reads the responses on one connection in turn (one buffer, however many responses it
    has read ahead)."""

    def __init__(self, client: socket.socket) -> None:
        self.file = _KeptOpen(socket.SocketIO(client, "rb"))

    def makefile(self, mode: str) -> BinaryIO:
        return self.file

    def next(self, method: str = "GET", started: float | None = None) -> Reply:
        started = time.monotonic() if started is None else started
        response = http.client.HTTPResponse(cast(socket.socket, self), method=method)
        response.begin()
        body = response.read()
        return Reply(response.status, response.headers, body, time.monotonic() - started)


def exchange(server: LocalServer, request: bytes, *, method: str = "GET") -> Reply:
    """The bytes sent as they are, and the one response they get. No response (the connection
    closed or reset) or none within 5 s fails the test."""
    with socket.create_connection(server.server_address, timeout=5) as client:
        started = time.monotonic()
        client.sendall(request)
        return _Responses(client).next(method, started)


def _chunked(body: bytes, size: int = 8192) -> bytes:
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"


# --- many customers at once -------------------------------------------------------------------


def _converse(port: int, customer: int) -> tuple[str, list[tuple[str, str]]]:
    """A customer's conversation: its session (the server's, named in the first answer), and
    the session each later answer names, against the one sent."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    session_id: str | None = None
    seen = []
    try:
        for turn in range(TURNS):
            body = {"message": f"How do I return item {customer}-{turn}?"}
            if session_id is not None:
                body["session_id"] = session_id
            connection.request(
                "POST", "/v1/chat", json.dumps(body), {"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            reply = json.loads(response.read())
            assert response.status == 200, reply
            if session_id is not None:
                seen.append((session_id, reply["session_id"]))
            session_id = reply["session_id"]
    finally:
        connection.close()
    assert session_id is not None
    return session_id, seen


def test_customers_writing_at_once_are_each_answered_in_their_own_conversation(
    server: LocalServer,
) -> None:
    """The handler's resolver keeps the request it resolves per thread: a message is never
    read as another customer's (their bodies swapped) while both are answered."""
    from kefu.bootstrap import get_chat_service

    # Given many customers writing at the same moment (threads switched as often as can be)
    port = server.server_address[1]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(CUSTOMERS) as pool:
            # When each sends its messages, one after another
            conversations = list(pool.map(lambda n: _converse(port, n), range(CUSTOMERS)))
    finally:
        sys.setswitchinterval(interval)

    # Then every answer is in the conversation it was asked in, and each remembers its own
    answered_in = [pair for _, turns in conversations for pair in turns]
    assert [sent for sent, _ in answered_in] == [answered for _, answered in answered_in]
    assert len({session_id for session_id, _ in conversations}) == CUSTOMERS
    sessions = get_chat_service().sessions
    for customer, (session_id, _) in enumerate(conversations):
        session = sessions.get(session_id)
        assert session is not None
        assert session.turn_count == TURNS
        assert [turn.message for turn in session.turns][-TURNS:] == [
            f"How do I return item {customer}-{turn}?" for turn in range(TURNS)
        ]


def test_a_hundred_connections_at_once_are_each_answered_while_half_of_them_stall(
    servers: Servers,
) -> None:
    """Its listen backlog holds 100 customers connecting at the same moment (none waits for
    its connection to be retried, or is reset), and a client that stops halfway through its
    request holds no one up: it gets a 408 when its time is up."""
    # Given a server that is listening but not accepting yet
    server = servers.make(QUICK)
    clients = [socket.socket() for _ in range(CONNECTIONS)]
    try:
        # When 100 clients connect at once
        for client in clients:
            client.setblocking(False)
            client.connect_ex(server.server_address)
        # Then the kernel completes every handshake at once (a dropped one is retried in 1 s)
        deadline = time.monotonic() + 0.5
        pending = list(clients)
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], pending, [], 0.05)
            pending = [client for client in pending if client not in writable]
        assert not pending, f"{len(pending)} of {CONNECTIONS} connections not established"
        assert all(c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 for c in clients)

        # When half of them ask for the health check, and half stop in the middle of it
        for number, client in enumerate(clients):
            client.setblocking(True)
            client.settimeout(5)
            whole = number % 2 == 0
            client.sendall(
                b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n" if whole else b"GET /v1/he"
            )
        servers.start(server)

        # Then every one is answered: the whole requests, and the stalled ones with a 408
        replies = [_Responses(client).next() for client in clients]
    finally:
        for client in clients:
            client.close()
    assert [reply.status for reply in replies[0::2]] == [200] * (CONNECTIONS // 2)
    assert {reply.error_code() for reply in replies[1::2]} == {"request_timeout"}
    assert [reply.status for reply in replies[1::2]] == [408] * (CONNECTIONS // 2)


def test_a_slow_turn_does_not_hold_up_the_others(servers: Servers) -> None:
    """The handler blocks (embedding on the CPU, a model's answer): it runs on a pool of
    threads, never on the server's event loop."""
    entered, release = threading.Event(), threading.Event()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        if event["path"] == "/slow":
            entered.set()
            release.wait(10)
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": "{}"}

    # Given a customer whose turn is taking its time
    server = servers.start(servers.make(handler=handler))
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(exchange, server, b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
        try:
            assert entered.wait(5)

            # When another customer asks meanwhile
            fast = exchange(server, b"GET /fast HTTP/1.1\r\nHost: localhost\r\n\r\n")

            # Then the other is answered, while the first is still being worked on
            assert fast.status == 200
            assert not slow.done()
        finally:
            release.set()
        assert slow.result().status == 200


# --- clients that do not speak HTTP as they should ---------------------------------------


CHAT = b"POST /v1/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
HEALTH = b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n"
MALFORMED = {
    "content length a word": (CHAT + b"Content-Length: abc\r\n\r\n{}", 400, "bad_request"),
    "content length a float": (CHAT + b"Content-Length: 1e3\r\n\r\n{}", 400, "bad_request"),
    "not HTTP (a TLS hello)": (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400, "bad_request"),
    "a body shorter than its length": (
        CHAT + b'Content-Length: 100\r\n\r\n{"message": "Where is',
        408,
        "request_timeout",
    ),
    "a request line with no end": (b"GET /v1/health HTTP/1.1", 408, "request_timeout"),
    "headers with no end": (HEALTH + b"Accept: */*\r\n", 408, "request_timeout"),
    "a URL of 10 KiB": (
        b"GET /v1/" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
        414,
        "uri_too_long",
    ),
    "a URL of 40 KiB with no end": (b"GET /v1/" + b"a" * 40_000, 414, "uri_too_long"),
    "a header of 20 KiB": (
        HEALTH + b"X-Filler: " + b"a" * 20_000 + b"\r\n\r\n",
        431,
        "headers_too_large",
    ),
    "a header of 40 KiB with no end": (
        HEALTH + b"X-Filler: " + b"a" * 40_000,
        431,
        "headers_too_large",
    ),
    "a chunked body of 70 KB": (
        CHAT
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + _chunked(b'{"message": "%s"}' % (b"a" * 70_000)),
        413,
        "payload_too_large",
    ),
    "an HTTP/2.0 request line": (
        b"GET /v1/health HTTP/2.0\r\nHost: localhost\r\n\r\n",
        505,
        "http_version_not_supported",
    ),
    "the HTTP/2 preface (h2c)": (
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        505,
        "http_version_not_supported",
    ),
}


@pytest.mark.parametrize(("request_bytes", "status", "code"), MALFORMED.values(), ids=MALFORMED)
def test_a_malformed_request_gets_a_json_error_at_once(
    quick_server: LocalServer, request_bytes: bytes, status: int, code: str
) -> None:
    # Given a server that waits half a second for what it was promised
    # When a client sends what is not a whole, well-formed HTTP/1.1 request of a fitting size
    reply = exchange(quick_server, request_bytes)

    # Then it gets an answer (not a hang, not a closed or reset connection), in the API's
    # error shape: a 4xx, or a 505 for an HTTP version this server does not speak
    assert (reply.status, reply.error_code()) == (status, code), reply.body
    assert reply.status < 500 or reply.status == 505
    assert reply.seconds < ANSWER_LIMIT_S


def test_a_body_over_64_kib_is_refused_and_the_connection_kept(quick_server: LocalServer) -> None:
    # Given a customer who sends a message of 70 KB, and asks for the health check after it
    message = json.dumps({"message": "a" * 70_000}).encode()
    with socket.create_connection(quick_server.server_address, timeout=5) as client:
        client.sendall(CHAT + b"Content-Length: %d\r\n\r\n" % len(message) + message)
        client.sendall(HEALTH + b"\r\n")
        responses = _Responses(client)

        # When the answers come
        refused, health = responses.next(), responses.next()

    # Then the message is refused with a 413 (unread), and the next request answered
    assert (refused.status, refused.error_code()) == (413, "payload_too_large")
    assert (health.status, health.json()["status"]) == (200, "ok")


@pytest.mark.parametrize(
    ("method", "path"),
    [("TRACE", "/v1/health"), ("PURGE", "/v1/chat"), ("TRACE", "/")],
)
def test_any_method_reaches_the_handler_and_gets_its_json_error(
    quick_server: LocalServer, method: str, path: str
) -> None:
    reply = exchange(quick_server, f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())

    assert 400 <= reply.status < 500
    assert reply.error_code() in {"method_not_allowed", "not_found"}


def head_then_get(server: LocalServer, path: str) -> tuple[Reply, Reply]:
    """A HEAD and a GET of `path` on one connection: a body sent after the HEAD's head would be
    read as the second response, and fail it (http.client reads no body for a HEAD itself)."""
    request = f"HEAD {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"
    request += f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with socket.create_connection(server.server_address, timeout=5) as client:
        client.sendall(request.encode())
        responses = _Responses(client)
        return responses.next("HEAD"), responses.next("GET")


def test_a_head_request_is_answered_by_the_handler_with_no_body(quick_server: LocalServer) -> None:
    head, after = head_then_get(quick_server, "/v1/health")

    # The API serves GET there: HEAD is the handler's 405, its JSON body not sent
    assert head.status == 405
    assert head.headers.get_content_type() == "application/json"
    assert (after.status, after.json()["status"]) == (200, "ok")


def test_a_method_in_lower_case_reaches_the_handler(quick_server: LocalServer) -> None:
    reply = exchange(quick_server, b"get /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")

    assert reply.status == 200
    assert reply.json()["status"] == "ok"


def test_the_pages_are_served_to_get_and_head(quick_server: LocalServer) -> None:
    page = exchange(quick_server, b"GET /agent HTTP/1.1\r\nHost: localhost\r\n\r\n")
    head, after = head_then_get(quick_server, "/")

    assert (page.status, page.headers.get_content_type()) == (200, "text/html")
    assert b"<title>" in page.body
    assert (head.status, head.headers.get_content_type()) == (200, "text/html")
    assert (after.status, after.headers.get_content_type()) == (200, "text/html")
    assert b"<title>" in after.body


def test_a_body_that_is_not_utf8_reaches_the_handler_in_base64(servers: Servers) -> None:
    from functions.chat.handler import lambda_handler

    events: list[dict[str, Any]] = []

    def recording(event: dict[str, Any], context: Any) -> dict[str, Any]:
        events.append(event)
        return lambda_handler(event, context)

    # Given a client that writes its JSON in UTF-16
    server = servers.start(servers.make(QUICK, handler=recording))
    body = json.dumps({"message": "我的订单到哪里了"}).encode("utf-16")

    # When it sends it
    reply = exchange(server, CHAT + b"Content-Length: %d\r\n\r\n" % len(body) + body)

    # Then the handler gets the bytes as they were sent, in base64, as API Gateway sends them,
    # and answers with its JSON error
    assert [(e["isBase64Encoded"], base64.b64decode(e["body"])) for e in events] == [(True, body)]
    assert 400 <= reply.status < 500
    assert reply.error_code()


def test_a_handler_that_fails_gets_a_json_error_not_a_closed_connection(
    servers: Servers,
) -> None:
    def failing(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("the handler failed")

    server = servers.start(servers.make(QUICK, handler=failing))

    reply = exchange(server, HEALTH + b"\r\n")

    assert (reply.status, reply.error_code()) == (500, "internal_error")
