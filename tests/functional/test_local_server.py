"""The local server under many customers at once (what `make load` found)."""

from __future__ import annotations

import http.client
import json
import select
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from local.server import make_server

CUSTOMERS = 24
TURNS = 4
CONNECTIONS = 100


@pytest.fixture
def server(configured: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadingHTTPServer]:
    """The local server on a free loopback port, over the mini KB, as `python -m local` runs
    it (metrics off)."""
    from kefu.bootstrap import get_chat_service

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    get_chat_service()  # built before serving, as `python -m local` builds it
    served = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield served
    served.shutdown()
    served.server_close()


def _converse(port: int, customer: int) -> list[tuple[str, str]]:
    """A customer's conversation: the session each answer names, against the one sent."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    session_id = f"customer-{customer:04d}"
    seen = []
    try:
        for turn in range(TURNS):
            body = {"session_id": session_id, "message": f"How do I return item {customer}-{turn}?"}
            connection.request(
                "POST", "/v1/chat", json.dumps(body), {"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            reply = json.loads(response.read())
            assert response.status == 200, reply
            seen.append((session_id, reply["session_id"]))
    finally:
        connection.close()
    return seen


def test_customers_writing_at_once_are_each_answered_in_their_own_conversation(
    server: ThreadingHTTPServer,
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
    answered_in = [(sent, answered) for turns in conversations for sent, answered in turns]
    assert [sent for sent, _ in answered_in] == [answered for _, answered in answered_in]
    sessions = get_chat_service().sessions
    for customer in range(CUSTOMERS):
        session = sessions.get(f"customer-{customer:04d}")
        assert session is not None
        assert session.turn_count == TURNS
        assert [turn.message for turn in session.turns][-TURNS:] == [
            f"How do I return item {customer}-{turn}?" for turn in range(TURNS)
        ]


def test_the_server_takes_a_hundred_connections_at_once(server: ThreadingHTTPServer) -> None:
    """Its listen backlog holds 100 customers connecting at the same moment: none waits for
    its connection to be retried (or is reset) while the server gets round to accepting."""
    # Given a server that is not accepting for now (its thread busy elsewhere)
    server.shutdown()
    port = server.server_address[1]
    clients = [socket.socket() for _ in range(CONNECTIONS)]
    try:
        # When 100 clients connect at once
        for client in clients:
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
        # Then the kernel completes every handshake at once (a dropped one is retried in 1 s)
        deadline = time.monotonic() + 0.5
        pending = list(clients)
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], pending, [], 0.05)
            pending = [client for client in pending if client not in writable]
        assert not pending, f"{len(pending)} of {CONNECTIONS} connections not established"
        assert all(c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 for c in clients)
    finally:
        for client in clients:
            client.close()
