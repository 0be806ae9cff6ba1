from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

EVENT = json.loads((Path(__file__).parents[1] / "events" / "chat_request.json").read_text())


class LambdaContext:
    function_name = "kefu-chat"
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:kefu-chat"
    aws_request_id = "5b3d6f2e-0000-4000-8000-000000000000"


Invoke = Callable[..., dict[str, Any]]


def _reset_composition_root() -> None:
    from kefu.bootstrap import get_chat_service, get_settings

    get_settings.cache_clear()
    get_chat_service.cache_clear()


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
    _reset_composition_root()
    yield tmp_path
    _reset_composition_root()


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
    ) -> dict[str, Any]:
        event = copy.deepcopy(EVENT)
        event["httpMethod"] = method
        event["path"] = event["resource"] = path
        event["requestContext"]["resourcePath"] = path
        event["requestContext"]["httpMethod"] = method
        event["body"] = raw if raw is not None else (None if body is None else json.dumps(body))
        if headers is not None:
            event["headers"] = headers
            event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
        return lambda_handler(event, LambdaContext())

    return call
