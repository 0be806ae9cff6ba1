from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EVENTS, LambdaContext, reset_composition_root

EVENT = json.loads((EVENTS / "chat_request.json").read_text())


Invoke = Callable[..., dict[str, Any]]


@pytest.fixture
def configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mini_kb_paths: list[Path]
) -> Iterator[Path]:
    """The composition root configured for local adapters, with the mini KB ingested."""
    from kb_ingest.pipeline import ingest
    from kefu.bootstrap import build_embedder, build_index
    from kefu.settings import Settings

    monkeypatch.setenv("KEFU_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KEFU_EMBEDDER", "hashing")
    monkeypatch.setenv("KEFU_FAQ_THRESHOLD", "0.4")
    monkeypatch.setenv("KEFU_PASSAGE_THRESHOLD", "0.3")
    settings = Settings()
    ingest(mini_kb_paths, index=build_index(settings), embedder=build_embedder(settings))
    reset_composition_root()
    yield tmp_path
    reset_composition_root()


@pytest.fixture
def invoke(configured: Path) -> Invoke:
    """Call the chat Lambda's handler with an API Gateway REST proxy event."""
    from functions.chat.handler import lambda_handler

    def call(
        method: str = "POST",
        path: str = "/v1/chat",
        body: Any = None,
        *,
        raw: str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        identity: dict[str, str] | None = None,
        base64_encoded: bool = False,
    ) -> dict[str, Any]:
        event = copy.deepcopy(EVENT)
        event["httpMethod"] = method
        event["path"] = event["resource"] = path
        event["requestContext"]["resourcePath"] = path
        event["requestContext"]["httpMethod"] = method
        event["body"] = raw if raw is not None else (None if body is None else json.dumps(body))
        # As API Gateway sends a body whose media type is one of the API's binary media types.
        event["isBase64Encoded"] = base64_encoded
        if headers is not None:
            event["headers"] = headers
            event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
        if query is not None:
            event["queryStringParameters"] = query
            event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
        if identity is not None:
            event["requestContext"]["identity"] = {
                **event["requestContext"]["identity"],
                **identity,
            }
        return lambda_handler(event, LambdaContext())

    return call
