"""Sessions are the service's: through the chat Lambda's handler, a client continues a
conversation only with an id the service issued, and is told when a new one starts."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from tests.functional.conftest import Invoke


def reply(response: dict[str, Any]) -> dict[str, Any]:
    assert response["statusCode"] == 200, response["body"]
    answer: dict[str, Any] = json.loads(response["body"])
    return answer


def stored_ids(data_dir: Path) -> set[str]:
    with sqlite3.connect(data_dir / "sessions.sqlite3") as db:
        return {session_id for (session_id,) in db.execute("SELECT session_id FROM conversations")}


def test_a_client_without_a_session_id_gets_one_and_continues_with_it(invoke: Invoke) -> None:
    first = reply(invoke(body={"message": "forgot my password"}))
    second = reply(invoke(body={"message": "refund timing", "session_id": first["session_id"]}))

    assert first["new_session"] is True
    assert (second["session_id"], second["new_session"]) == (first["session_id"], False)


def test_a_made_up_session_id_starts_a_new_session_under_the_services_id(
    invoke: Invoke, configured: Path
) -> None:
    # Given a client that invents a well-formed session id
    invented = "my-own-session-0001"

    # When it sends a message under it
    answer = reply(invoke(body={"message": "forgot my password", "session_id": invented}))

    # Then the conversation starts under an id the service made, and the response says so
    assert answer["new_session"] is True
    assert answer["session_id"] != invented
    # And the store holds that session, never one under the invented id
    assert stored_ids(configured) == {answer["session_id"]}
    # And the thread of the invented id is not found either
    missing = invoke("GET", f"/v1/sessions/{invented}/messages")
    assert missing["statusCode"] == 404


def test_the_openapi_document_says_when_a_new_session_starts(invoke: Invoke) -> None:
    document = json.loads(invoke("GET", "/v1/openapi.json")["body"])
    schemas = document["components"]["schemas"]

    new_session = schemas["ChatResponse"]["properties"]["new_session"]
    assert new_session["type"] == "boolean"
    assert new_session["default"] is False
    assert "expired" in new_session["description"]
    assert "does not know" in schemas["ChatRequest"]["properties"]["session_id"]["description"]
