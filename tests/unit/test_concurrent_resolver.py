"""The chat API's resolver answers requests on many threads at once, as the local server does."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from aws_lambda_powertools.event_handler.openapi.params import Body
from pydantic import BaseModel

from kefu.api import ConcurrentRestResolver
from local.server import LocalContext, proxy_event

REQUESTS = 48


class Said(BaseModel):
    text: str


@pytest.fixture
def switching_often() -> Iterator[None]:
    """Threads switched as often as the interpreter can: races show at once."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def _fresh_app() -> ConcurrentRestResolver:
    """An app whose routes have never been called (their middleware stacks not built yet)."""
    app = ConcurrentRestResolver(enable_validation=True)

    def tagged(app: ConcurrentRestResolver, next_middleware: Any) -> Any:
        return next_middleware(app)

    @app.post("/echo/<who>", middlewares=[tagged])
    def echo(who: str, said: Annotated[Said, Body(embed=False)]) -> dict[str, str]:
        return {"who": who, "text": said.text, "path": app.current_event.path}

    return app


@pytest.mark.usefixtures("switching_often")
def test_requests_resolved_at_once_each_get_their_own_answer() -> None:
    # Given a route called for the first time by many requests at the same moment
    app = _fresh_app()
    start = threading.Barrier(REQUESTS)
    answers: dict[int, dict[str, Any]] = {}

    def call(number: int) -> None:
        event = proxy_event(
            method="POST",
            raw_path=f"/echo/customer-{number}",
            headers={"content-type": "application/json"},
            body=json.dumps({"text": f"message {number}"}).encode(),
        )
        start.wait()
        answers[number] = app.resolve(event, LocalContext())  # type: ignore[arg-type]

    # When each is resolved on its own thread
    threads = [threading.Thread(target=call, args=(n,)) for n in range(REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then each answer is its own request's: its path, its path argument and its body
    for number in range(REQUESTS):
        assert answers[number]["statusCode"] == 200, answers[number]
        assert json.loads(answers[number]["body"]) == {
            "who": f"customer-{number}",
            "text": f"message {number}",
            "path": f"/echo/customer-{number}",
        }
