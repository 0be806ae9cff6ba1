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
