"""The chat Lambda end to end through its handler, with API Gateway REST proxy events."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.functional.conftest import Invoke


def body(response: dict) -> dict:
    assert response["multiValueHeaders"]["Content-Type"] == ["application/json"]
    return json.loads(response["body"])


def turns_stored(data_dir: Path) -> int:
    path = data_dir / "sessions.sqlite3"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return sum(
            json.loads(body)["turn_count"]
            for (body,) in db.execute("SELECT body FROM conversations")
        )


def test_a_question_gets_the_full_response_shape(invoke: Invoke) -> None:
    response = invoke(body={"message": "How long does a refund take?"})
    assert response["statusCode"] == 200
    reply = body(response)
    assert set(reply) == {
        "session_id",
        "new_session",
        "turn_id",
        "answer",
        "language",
        "sources",
        "intent",
        "confidence",
        "outcome",
        "model",
        "slots",
        "handover",
    }
    assert reply["outcome"] == "answered"
    assert reply["sources"][0]["id"] == "refund-01-en"
    assert set(reply["sources"][0]) == {"id", "title", "score"}
    assert 0 <= reply["confidence"] <= 1


def test_chinese_answers_travel_as_utf8_not_escapes(invoke: Invoke) -> None:
    response = invoke(body={"message": "退款多久到账？"})
    assert "工作日" in response["body"]
    assert body(response)["language"] == "zh"


def test_a_follow_up_continues_the_session(invoke: Invoke, configured: Path) -> None:
    first = body(invoke(body={"message": "forgot my password"}))
    second = body(invoke(body={"message": "refund timing", "session_id": first["session_id"]}))
    assert second["session_id"] == first["session_id"]
    assert second["turn_id"] != first["turn_id"]
    assert turns_stored(configured) == 2


def test_asking_for_a_human_is_handed_over(invoke: Invoke) -> None:
    reply = body(invoke(body={"message": "我要转人工"}))
    assert reply["outcome"] == "handed_over"
    assert reply["intent"] == "human_agent"


def test_health_reports_ok(invoke: Invoke) -> None:
    response = invoke("GET", "/v1/health")
    assert response["statusCode"] == 200
    assert body(response)["status"] == "ok"


def test_the_openapi_document_describes_the_chat_route(invoke: Invoke) -> None:
    response = invoke("GET", "/v1/openapi.json")
    assert response["statusCode"] == 200
    document = json.loads(response["body"])
    chat = document["paths"]["/v1/chat"]["post"]
    assert {"200", "400", "422"} <= set(chat["responses"])
    schemas = document["components"]["schemas"]
    assert schemas["ChatRequest"]["properties"]["message"]["maxLength"] == 2000
    assert set(schemas["ChatResponse"]["required"]) >= {"session_id", "answer", "outcome"}


@pytest.mark.parametrize(
    ("request_body", "status", "code", "mentions"),
    [
        ('{"message": "hi"', 400, "malformed_json", "not valid JSON"),
        ("{}", 422, "invalid_request", "message: is required"),
        ('{"message": ""}', 422, "invalid_request", "message"),
        ('{"message": "   "}', 422, "invalid_request", "message"),
        (json.dumps({"message": "x" * 2001}), 422, "invalid_request", "at most 2000 characters"),
        ('{"message": 42}', 422, "invalid_request", "message"),
        ('{"message": ["a"]}', 422, "invalid_request", "message"),
        ('{"message": "hi", "language": "fr"}', 422, "invalid_request", "language"),
        ('{"message": "hi", "session_id": "../../etc"}', 422, "invalid_request", "session_id"),
        ('{"message": "hi", "session_id": 12345678}', 422, "invalid_request", "session_id"),
        ('{"message": "hi", "admin": true}', 422, "invalid_request", "admin: is not a known field"),
        ('["message"]', 422, "invalid_request", ""),
        ("null", 422, "invalid_request", ""),
    ],
)
def test_bad_input_gets_a_json_4xx_and_changes_nothing(
    invoke: Invoke, configured: Path, request_body: str, status: int, code: str, mentions: str
) -> None:
    response = invoke(raw=request_body)
    assert response["statusCode"] == status
    error = body(response)["error"]
    assert error["code"] == code
    assert mentions in error["message"]
    assert turns_stored(configured) == 0


def test_a_message_of_exactly_2000_characters_is_accepted(invoke: Invoke) -> None:
    assert invoke(body={"message": "退" * 2000})["statusCode"] == 200


def test_a_body_that_is_not_json_is_refused_with_415(invoke: Invoke, configured: Path) -> None:
    response = invoke(
        raw="message=hello", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response["statusCode"] == 415
    assert body(response)["error"]["code"] == "unsupported_media_type"
    assert turns_stored(configured) == 0


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/nope"), ("DELETE", "/v1/nope")])
def test_unknown_routes_get_a_json_404(invoke: Invoke, method: str, path: str) -> None:
    response = invoke(method, path)
    assert response["statusCode"] == 404
    assert body(response)["error"]["code"] == "not_found"
