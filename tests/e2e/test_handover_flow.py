"""The hand-over as `make run` serves it, over HTTP: a customer asks for a human, the ticket
reaches the agent desk through the local escalation queue and worker, an agent answers, the
customer reads the answer, the agent closes the ticket, and the bot answers again."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import STARTUP_LIMIT_S, LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(STARTUP_LIMIT_S + 60)]

# The escalation worker polls its queue twice a second; a ticket is open well within this.
QUEUE_LIMIT_S = 20


def call(
    stack: LocalStack,
    method: str,
    path: str,
    payload: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        stack.url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw, status = response.read(), response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    return status, json.loads(raw) if raw.startswith((b"{", b"[")) else raw.decode()


def agent_key(stack: LocalStack) -> str:
    for line in stack.output:
        if found := re.search(r"agent key: ([A-Za-z0-9_-]+)", line):
            return found.group(1)
    raise AssertionError("the local stack printed no agent key")


def test_a_customer_reaches_a_human_and_comes_back_to_the_bot(
    local_stack: LocalStack, data_dir: Path
) -> None:
    agent = {"X-Agent-Key": agent_key(local_stack)}
    status, page = call(local_stack, "GET", "/agent")
    assert status == 200
    assert "<html" in page.lower()

    _, first = call(local_stack, "POST", "/v1/chat", {"message": "退款多久到账？"})
    sid = first["session_id"]
    _, handed = call(local_stack, "POST", "/v1/chat", {"message": "转人工", "session_id": sid})
    assert handed["outcome"] == "handed_over"
    assert handed["handover"]["trigger"] == "customer_request"
    ticket_id = handed["handover"]["ticket_id"]

    # The local worker drains the escalation queue into the escalation handler.
    deadline = time.monotonic() + QUEUE_LIMIT_S
    ticket: dict[str, Any] = {}
    while time.monotonic() < deadline:
        _, ticket = call(local_stack, "GET", f"/v1/tickets/{ticket_id}", headers=agent)
        # Completed (open), then announced: two writes, so wait for the second as well.
        if ticket.get("status") == "open" and ticket.get("notified"):
            break
        time.sleep(0.2)
    assert ticket["status"] == "open", ticket
    assert [m["author"] for m in ticket["transcript"]] == ["customer", "bot", "customer", "bot"]
    assert ticket["transcript"][0]["text"] == "退款多久到账？"
    assert ticket["notified"] == ["log"]
    _, listed = call(local_stack, "GET", "/v1/tickets?status=open", headers=agent)
    assert ticket_id in [t["ticket_id"] for t in listed["tickets"]]

    _, waiting = call(
        local_stack, "POST", "/v1/chat", {"message": "请尽快，谢谢", "session_id": sid}
    )
    assert waiting["outcome"] == "handed_over"
    status, _ = call(
        local_stack,
        "POST",
        f"/v1/tickets/{ticket_id}/reply",
        {"text": "您好，我是客服小李，退款已为您加急。", "agent": "小李"},
        headers=agent,
    )
    assert status == 200
    _, thread = call(local_stack, "GET", f"/v1/sessions/{sid}/messages")
    assert [(m["author"], m["text"]) for m in thread["messages"]] == [
        ("customer", "请尽快，谢谢"),
        ("agent", "您好，我是客服小李，退款已为您加急。"),
    ]

    status, closed = call(local_stack, "POST", f"/v1/tickets/{ticket_id}/close", headers=agent)
    assert (status, closed["status"]) == (200, "closed")
    _, back = call(local_stack, "POST", "/v1/chat", {"message": "快递几天到", "session_id": sid})
    assert back["outcome"] == "answered"
    assert back["handover"] is None


def test_agent_routes_need_the_agent_key(local_stack: LocalStack) -> None:
    status, error = call(local_stack, "GET", "/v1/tickets")
    assert status == 401
    assert error["error"]["code"] == "unauthorised"
    status, _ = call(local_stack, "GET", "/v1/tickets", headers={"X-Agent-Key": "wrong"})
    assert status == 401


def test_a_low_rating_reaches_the_agent_desk(local_stack: LocalStack) -> None:
    agent = {"X-Agent-Key": agent_key(local_stack)}
    _, reply = call(local_stack, "POST", "/v1/chat", {"message": "How long does a refund take?"})
    status, rated = call(
        local_stack,
        "POST",
        "/v1/feedback",
        {"session_id": reply["session_id"], "rating": 1, "comment": "did not help"},
    )
    assert status == 200
    ticket_id = rated["handover"]["ticket_id"]
    _, ticket = call(local_stack, "GET", f"/v1/tickets/{ticket_id}", headers=agent)
    assert (ticket["trigger"], ticket["priority"]) == ("low_rating", "high")
