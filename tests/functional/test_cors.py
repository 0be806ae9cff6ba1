"""Which browser pages may call the API: none by default, only the configured origins otherwise.

The chat function reads `KEFU_CORS_ALLOW_ORIGINS` once, when its API module is imported (a cold
start), so each configuration runs in a process of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import EVENTS

# Sends each request through the chat handler and prints each response's headers.
_CALLER = """
import copy, json, sys
from functions.chat.handler import lambda_handler
from tests.conftest import LambdaContext
event = json.loads(sys.argv[1])
answers = []
for method, path, origin in json.loads(sys.argv[2]):
    call = copy.deepcopy(event)
    call["httpMethod"] = call["requestContext"]["httpMethod"] = method
    call["path"] = call["resource"] = call["requestContext"]["resourcePath"] = path
    call["body"] = None
    headers = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    call["headers"] = {**call["headers"], **headers}
    multi = {key: [value] for key, value in headers.items()}
    call["multiValueHeaders"] = {**call["multiValueHeaders"], **multi}
    response = lambda_handler(call, LambdaContext())
    found = dict(response.get("headers") or {})
    found.update({k: ", ".join(v) for k, v in (response.get("multiValueHeaders") or {}).items()})
    answers.append({"status": response["statusCode"], "headers": found})
print(json.dumps(answers))
"""
SITE = "https://support.example.com"
OTHER_SITE = "https://attacker.example.net"
REQUESTS = [
    ("GET", "/v1/health", SITE),
    ("OPTIONS", "/v1/chat", SITE),
    ("GET", "/v1/health", OTHER_SITE),
    ("OPTIONS", "/v1/chat", OTHER_SITE),
]


def _answers(origins: list[str] | None) -> list[dict[str, Any]]:
    """The handler's answers to `REQUESTS` in a cold process with these origins configured."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KEFU_")}
    environment["POWERTOOLS_METRICS_DISABLED"] = "true"
    if origins is not None:
        environment["KEFU_CORS_ALLOW_ORIGINS"] = json.dumps(origins)
    event = (EVENTS / "chat_request.json").read_text()
    finished = subprocess.run(
        [sys.executable, "-c", _CALLER, event, json.dumps(REQUESTS)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    answers: list[dict[str, Any]] = json.loads(finished.stdout.strip().splitlines()[-1])
    return answers


def _allowed(answer: dict[str, Any]) -> str | None:
    headers = {key.lower(): value for key, value in answer["headers"].items()}
    allowed: str | None = headers.get("access-control-allow-origin")
    return allowed


@pytest.mark.parametrize("origins", [None, []], ids=["unset", "empty"])
def test_by_default_no_page_of_another_origin_may_call_the_api(origins: list[str] | None) -> None:
    # Given the API as the local stack runs it: no origins configured
    # When pages of other origins call it, and ask before they do (a preflight)
    answers = _answers(origins)

    # Then no answer allows any origin: the browser keeps them all from the page
    assert [_allowed(answer) for answer in answers] == [None] * len(REQUESTS)
    assert answers[0]["status"] == 200  # the call itself is answered (a same-origin page reads it)


def test_a_configured_origin_may_call_the_api_and_no_other() -> None:
    # Given the API configured for the enterprise's support site
    answers = _answers([SITE])
    site_call, site_preflight, other_call, other_preflight = answers

    # Then the support site's calls and preflights are allowed, by its origin
    assert _allowed(site_call) == SITE
    assert _allowed(site_preflight) == SITE
    assert "POST" in site_preflight["headers"]["Access-Control-Allow-Methods"]
    # And another site's are not
    assert _allowed(other_call) is None
    assert _allowed(other_preflight) is None
