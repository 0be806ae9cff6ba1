"""A deployment whose adapters are not available answers 503 with a JSON error body; no crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import reset_composition_root
from tests.functional.conftest import Invoke


def test_an_unavailable_adapter_is_a_json_503(
    invoke: Invoke, configured: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEFU_INDEX", "opensearch")
    reset_composition_root()

    response = invoke(body={"message": "How long does a refund take?"})

    assert response["statusCode"] == 503
    assert json.loads(response["body"])["error"]["code"] == "not_configured"
    assert invoke("GET", "/v1/health")["statusCode"] == 200


class _EmptyIndex:
    """A knowledge index nothing was ingested into yet (as OpenSearch before the first ingest)."""

    version = "0"

    def search(self, query: object) -> list[object]:
        from kefu.errors import IndexNotReady

        raise IndexNotReady("the knowledge index does not exist yet: ingest a knowledge base")

    def load_head(self, tenant: str) -> bytes | None:
        return None


def test_a_question_before_any_ingest_is_a_json_503_index_not_ready(
    invoke: Invoke, configured: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kefu import api, bootstrap
    from kefu.adapters.embedders import HashingEmbedder
    from kefu.chat import ChatService
    from kefu.settings import Settings

    # Given a deployment whose index has no content yet
    settings = Settings()
    embedder = HashingEmbedder()
    service = ChatService(
        retriever=bootstrap.build_retriever(settings, embedder=embedder, index=_EmptyIndex()),
        model=bootstrap.build_model(settings),
        sessions=bootstrap.build_sessions(settings),
    )
    monkeypatch.setattr(api, "get_chat_service", lambda: service)

    # When a customer asks something
    response = invoke(body={"message": "How long does a refund take?"})

    # Then the API says why, in JSON, and stores nothing
    assert response["statusCode"] == 503
    error = json.loads(response["body"])["error"]
    assert error["code"] == "index_not_ready"
    assert "ingest" in error["message"]
    assert not (configured / "sessions.sqlite3").exists() or _turns(configured) == 0


def test_a_dependency_down_while_the_service_is_built_is_a_json_503_to_retry(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kefu import api
    from kefu.errors import DependencyUnavailable

    def unreachable() -> object:
        raise DependencyUnavailable("session table unreachable")

    monkeypatch.setattr(api, "get_chat_service", unreachable)

    response = invoke(body={"message": "How long does a refund take?"})

    assert response["statusCode"] == 503
    assert response["multiValueHeaders"]["Content-Type"] == ["application/json"]
    error = json.loads(response["body"])["error"]
    assert error["code"] == "temporarily_unavailable"
    assert "unreachable" not in error["message"]  # internals stay in the log


def _turns(data_dir: Path) -> int:
    import sqlite3

    with sqlite3.connect(data_dir / "sessions.sqlite3") as db:
        return sum(
            json.loads(body)["turn_count"]
            for (body,) in db.execute("SELECT body FROM conversations")
        )
