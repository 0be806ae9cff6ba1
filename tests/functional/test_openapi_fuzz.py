"""The local stack's HTTP API fuzzed from its own OpenAPI document (schemathesis), over a real
socket to the local server (`local.server`), with the chat service on local stand-ins.

Every generated request must get an answer (no dropped connection), never a 5xx, a status and
a body the document declares, and every error in the project's shape. Each operation runs
`EXAMPLES` cases under `make test` (about a hundred in all) and `FUZZ_EXAMPLES` under
`make fuzz` (HYPOTHESIS_PROFILE=fuzz), which prints the tally (tests/fuzz_tally.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import reset_composition_root
from tests.fuzz_tally import off_shape, record

AGENT_KEY = "agent-key-for-schemathesis"
FUZZING = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
EXAMPLES = 4
FUZZ_EXAMPLES = 150
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def served(configured: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The local server on a free loopback port, agent routes open to the agent key."""
    from local.server import make_server

    monkeypatch.setenv("KEFU_AGENT_API_KEY", AGENT_KEY)
    reset_composition_root()
    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=15)


def _document() -> dict[str, Any]:
    """The document the local stack serves at /v1/openapi.json (the routes are fixed at import;
    schemathesis' lazy fixture loading does not run on this pytest)."""
    from kefu.api import openapi_document

    return openapi_document()


schema = schemathesis.openapi.from_dict(_document())


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES if FUZZING else EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_request_the_document_allows_gets_a_documented_answer(served: str, case: Any) -> None:
    try:
        response = case.call(base_url=served, headers={"X-Agent-Key": AGENT_KEY}, timeout=30)
    except requests.ConnectionError:
        record("HTTP requests", None)
        raise
    problem = off_shape(response.status_code, response.content)
    record("HTTP requests", response.status_code, problem)
    assert problem is None, problem
    case.validate_response(response, checks=CHECKS)
