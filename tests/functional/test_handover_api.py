"""Hand-over through the chat Lambda's routes: feedback, the customer's thread, and the agents'
routes with their authorisation, with API Gateway REST proxy events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.functional.conftest import Invoke

AGENT_KEY = "agent-key-for-tests"
AGENT = {"X-Agent-Key": AGENT_KEY, "Content-Type": "application/json"}


@pytest.fixture(autouse=True)
def agent_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEFU_AGENT_API_KEY", AGENT_KEY)


def body(response: dict[str, Any]) -> Any:
    return json.loads(response["body"])


def hand_over(invoke: Invoke) -> dict[str, Any]:
    reply = body(invoke(body={"message": "转人工"}))
    assert reply["outcome"] == "handed_over"
    return reply


def test_a_hand_over_is_answered_by_an_agent_and_read_by_the_customer(invoke: Invoke) -> None:
    reply = hand_over(invoke)
    ticket_id = reply["handover"]["ticket_id"]
    listed = body(invoke("GET", "/v1/tickets", headers=AGENT, query={"status": "pending"}))
    assert [t["ticket_id"] for t in listed["tickets"]] == [ticket_id]
    sid = reply["session_id"]
    invoke(body={"message": "我的订单一直没到", "session_id": sid})
    answered = invoke(
        "POST",
        f"/v1/tickets/{ticket_id}/reply",
        headers=AGENT,
        body={"text": "您好，我是客服小李，马上为您查询。", "agent": "Li"},
    )
    assert answered["statusCode"] == 200
    thread = body(invoke("GET", f"/v1/sessions/{sid}/messages"))
    assert thread["handed_over"] is True
    assert [(m["author"], m["agent"]) for m in thread["messages"]] == [
        ("customer", ""),
        ("agent", "Li"),
    ]
    seen = thread["messages"][0]["message_id"]
    newer = body(invoke("GET", f"/v1/sessions/{sid}/messages", query={"after": seen}))
    assert [m["author"] for m in newer["messages"]] == ["agent"]

    closed = body(invoke("POST", f"/v1/tickets/{ticket_id}/close", headers=AGENT))
    assert closed["status"] == "closed"
    again = body(invoke(body={"message": "How long does a refund take?", "session_id": sid}))
    assert again["outcome"] == "answered"
    assert body(invoke("GET", f"/v1/sessions/{sid}/messages"))["handed_over"] is False


def test_a_low_rating_hands_over(invoke: Invoke) -> None:
    reply = body(invoke(body={"message": "How long does a refund take?"}))
    rated = invoke("POST", "/v1/feedback", body={"session_id": reply["session_id"], "rating": 1})
    assert rated["statusCode"] == 200
    assert body(rated)["handover"]["trigger"] == "low_rating"


@pytest.mark.parametrize(
    ("feedback", "status"),
    [
        ({"session_id": "abcdefgh12", "rating": 0}, 422),
        ({"session_id": "abcdefgh12", "rating": 6}, 422),
        ({"session_id": "abcdefgh12", "rating": "5"}, 422),
        ({"session_id": "../etc/passwd", "rating": 3}, 422),
        ({"rating": 3}, 422),
        ({"session_id": "abcdefgh12", "rating": 3, "extra": 1}, 422),
        ({"session_id": "no-such-session-1", "rating": 3}, 404),
    ],
)
def test_bad_feedback_gets_a_json_4xx(
    invoke: Invoke, feedback: dict[str, Any], status: int
) -> None:
    response = invoke("POST", "/v1/feedback", body=feedback)
    assert response["statusCode"] == status
    assert set(body(response)["error"]) == {"code", "message"}


@pytest.mark.parametrize(
    ("method", "path", "payload", "status"),
    [
        ("GET", "/v1/sessions/short/messages", None, 422),
        ("GET", "/v1/sessions/unknown-session-1/messages", None, 404),
        ("GET", "/v1/tickets/nosuchticket1", None, 404),
        ("GET", "/v1/tickets/bad%20id", None, 422),
        ("POST", "/v1/tickets/nosuchticket1/reply", {"text": "hi"}, 404),
        ("POST", "/v1/tickets/nosuchticket1/reply", {"text": ""}, 422),
        ("POST", "/v1/tickets/nosuchticket1/reply", {"message": "hi"}, 422),
        ("POST", "/v1/tickets/nosuchticket1/close", None, 404),
    ],
)
def test_bad_input_on_the_hand_over_routes_gets_a_json_4xx(
    invoke: Invoke, method: str, path: str, payload: Any, status: int
) -> None:
    response = invoke(method, path, headers=AGENT, body=payload)
    assert response["statusCode"] == status
    assert set(body(response)["error"]) == {"code", "message"}


def test_an_agent_query_with_a_bad_status_gets_422(invoke: Invoke) -> None:
    response = invoke("GET", "/v1/tickets", headers=AGENT, query={"status": "lost"})
    assert response["statusCode"] == 422


def test_replying_to_a_closed_ticket_is_a_409(invoke: Invoke) -> None:
    ticket_id = hand_over(invoke)["handover"]["ticket_id"]
    invoke("POST", f"/v1/tickets/{ticket_id}/close", headers=AGENT)
    response = invoke("POST", f"/v1/tickets/{ticket_id}/reply", headers=AGENT, body={"text": "x"})
    assert response["statusCode"] == 409
    assert body(response)["error"]["code"] == "ticket_closed"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/tickets"),
        ("GET", "/v1/tickets/abcdefgh12"),
        ("POST", "/v1/tickets/abcdefgh12/reply"),
        ("POST", "/v1/tickets/abcdefgh12/close"),
    ],
)
@pytest.mark.parametrize("headers", [{}, {"X-Agent-Key": "wrong"}], ids=["no key", "wrong key"])
def test_agent_routes_without_the_agent_key_get_401(
    invoke: Invoke, configured: Path, method: str, path: str, headers: dict[str, str]
) -> None:
    response = invoke(method, path, headers=headers, body={"text": "hi"})
    assert response["statusCode"] == 401
    assert body(response)["error"]["code"] == "unauthorised"


@pytest.mark.parametrize(
    ("method", "path", "payload", "query"),
    [
        ("POST", "/v1/tickets/abcdefgh12/reply", {"text": 1}, None),
        ("POST", "/v1/tickets/x/reply", "{not json", None),
        ("GET", "/v1/tickets", None, {"status": "lost"}),
        ("GET", "/v1/tickets/x", None, None),
    ],
)
def test_an_unauthorised_caller_with_bad_input_gets_401_not_the_schema(
    invoke: Invoke, method: str, path: str, payload: Any, query: dict[str, str] | None
) -> None:
    response = invoke(method, path, body=payload, query=query)
    assert response["statusCode"] == 401
    assert body(response)["error"]["code"] == "unauthorised"


def test_with_iam_auth_an_unsigned_call_gets_403_and_a_signed_one_passes(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import reset_composition_root

    monkeypatch.setenv("KEFU_AGENT_AUTH", "iam")
    reset_composition_root()
    unsigned = invoke("GET", "/v1/tickets", headers=AGENT)
    assert unsigned["statusCode"] == 403
    signed = invoke(
        "GET",
        "/v1/tickets",
        headers={},
        identity={"userArn": "arn:aws:sts::123456789012:assumed-role/kefu-agents/li"},
    )
    assert signed["statusCode"] == 200


def test_the_openapi_document_has_the_hand_over_routes(invoke: Invoke) -> None:
    paths = body(invoke("GET", "/v1/openapi.json"))["paths"]
    for path in (
        "/v1/feedback",
        "/v1/sessions/{session_id}/messages",
        "/v1/tickets",
        "/v1/tickets/{ticket_id}",
        "/v1/tickets/{ticket_id}/reply",
        "/v1/tickets/{ticket_id}/close",
    ):
        assert path in paths
