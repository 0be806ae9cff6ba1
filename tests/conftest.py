"""Shared test setup: no network but loopback, no real AWS, a small purpose-built KB."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

FIXTURES = Path(__file__).parent / "fixtures"
EVENTS = Path(__file__).parent / "events"


class LambdaContext:
    """The parts of the Lambda context the handlers and Powertools read."""

    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    aws_request_id = "5b3d6f2e-0000-4000-8000-000000000000"

    def __init__(self, function_name: str = "kefu-chat") -> None:
        self.function_name = function_name
        self.invoked_function_arn = (
            f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        )

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def reset_composition_root() -> None:
    """Forget the cached settings and service graph, so the next call reads the environment."""
    from kefu.bootstrap import (
        get_chat_service,
        get_desk,
        get_embedder,
        get_index,
        get_settings,
    )

    for cached in (get_settings, get_embedder, get_index, get_chat_service, get_desk):
        cached.cache_clear()


# Powertools reads these when `kefu.observability` is first imported, as the Lambda runtime does.
os.environ.update(
    POWERTOOLS_SERVICE_NAME="kefu-chat",
    POWERTOOLS_METRICS_NAMESPACE="Kefu",
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_LOG_LEVEL="WARNING",
)

# Property tests: `dev` (what `make test` runs) tries 100 examples of each; `fuzz`
# (HYPOTHESIS_PROFILE=fuzz) tries 1,000. No deadline: a chat turn's time depends on the machine.
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("fuzz", max_examples=1_000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

_real_connect = socket.socket.connect


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under xdist, keep each expensive session fixture (local stack, CDK synth) on one worker."""
    for item in items:
        for group in ("e2e", "infra"):
            if f"tests/{group}/" in item.nodeid:
                item.add_marker(pytest.mark.xdist_group(group))


def _loopback_only(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConnectionRefusedError(f"tests may only reach loopback, not {host}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test: sockets only to loopback, and fake AWS credentials."""
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def mini_kb_paths() -> list[Path]:
    return [FIXTURES / "mini_faq.jsonl", FIXTURES / "mini-policy.en.md"]


@pytest.fixture
def mini_index(mini_kb_paths: list[Path]) -> Any:
    """The small fixture KB in an in-memory embedded index, with the hashing embedder."""
    from kb_ingest.pipeline import ingest
    from kefu.adapters.embedded_index import EmbeddedIndex
    from kefu.adapters.embedders import HashingEmbedder

    index = EmbeddedIndex(":memory:")
    ingest(mini_kb_paths, index=index, embedder=HashingEmbedder())
    return index


@pytest.fixture
def retriever(mini_index: Any) -> Any:
    from kefu.adapters.embedders import HashingEmbedder
    from kefu.decision import Thresholds
    from kefu.retrieval import Retriever

    return Retriever(
        embedder=HashingEmbedder(),
        index=mini_index,
        thresholds=Thresholds(fit=0.4, head=0.58, similarity=0.4, passage=0.3),
    )


@pytest.fixture
def chat_service(retriever: Any) -> Any:
    from kefu.adapters.extractive import ExtractiveModel
    from kefu.adapters.sessions import SqliteSessionStore
    from kefu.chat import ChatService

    return ChatService(
        retriever=retriever, model=ExtractiveModel(), sessions=SqliteSessionStore(":memory:")
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fuzz tests' tally (tests/fuzz_tally.py), when any ran."""
    from tests.fuzz_tally import summary

    line = summary()
    if line:
        terminalreporter.write_line(line)
