"""The composition root builds clients for the path they serve: a chat turn must be able to
degrade before API Gateway and the chat Lambda give up (29 s); ingestion may wait.

The worst case is computed from the clients' own configuration, so that raising a timeout or
a retry count anywhere fails here rather than in front of a customer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kefu.adapters.opensearch import SEARCH_REQUESTS
from kefu.bootstrap import build_embedder, build_index
from kefu.settings import Settings

CDK_JSON = Path(__file__).parents[2] / "cdk.json"
# What a turn needs besides embedding and searching: the session store's read and write, the
# answer, the Lambda's own work. The embed and the search must leave at least this much.
HEADROOM_SECONDS = 5.0
# botocore's standard and adaptive modes pause up to min(2 ** i, 20) s before retry i (0-based)
# of a throttled call (50 ms scale otherwise): the ceiling of each pause.
_BOTOCORE_MAX_BACKOFF = 20.0


def _settings(embedder: str) -> Settings:
    return Settings(
        embedder=embedder,  # type: ignore[arg-type]
        index="opensearch",
        opensearch_url="https://search-kefu-abc.us-east-1.es.amazonaws.com",
        sagemaker_embedding_endpoint="kefu-embed",
        sagemaker_embedding_dim=384,
        aws_region="us-east-1",
    )


def chat_timeout_seconds() -> float:
    stages = json.loads(CDK_JSON.read_text())["context"]["stages"]
    return min(float(stage["chat_timeout_seconds"]) for stage in stages.values())


def embed_worst_case(embedder: Any) -> float:
    """Seconds one question's embedding may take before the embedder gives up.

    Each botocore attempt may wait the connect timeout, then the read timeout; between
    attempts botocore pauses; the embedder's own throttle backoff repeats the whole call after
    a pause of its own.
    """
    config = embedder._client.meta.config
    attempts = config.retries["total_max_attempts"]
    pauses = sum(min(2.0**i, _BOTOCORE_MAX_BACKOFF) for i in range(attempts - 1))
    call = attempts * (config.connect_timeout + config.read_timeout) + pauses
    backoff = embedder._backoff
    throttle_pauses = sum(
        min(backoff.max_delay, backoff.base_delay * 2**retry) for retry in range(backoff.retries)
    )
    return (1 + backoff.retries) * call + throttle_pauses


def search_worst_case(index: Any) -> float:
    """Seconds one search may take: `SEARCH_REQUESTS` requests, each tried 1 + max_retries
    times without a pause, each attempt waiting up to the timeout to connect and as long to
    read (requests applies a single timeout to both)."""
    transport = index._client.transport
    timeout = transport.get_connection().timeout
    return SEARCH_REQUESTS * (1 + transport.max_retries) * 2 * timeout


@pytest.mark.parametrize("embedder", ["bedrock", "sagemaker"])
def test_a_chat_turns_embed_and_search_give_up_well_before_the_chat_timeout(
    embedder: str,
) -> None:
    # Given the clients the chat path builds (bootstrap's defaults)
    settings = _settings(embedder)
    worst = embed_worst_case(build_embedder(settings)) + search_worst_case(build_index(settings))

    # Then even if every attempt times out, the turn degrades with time to spare
    assert worst == pytest.approx(21.0)  # 2 x (1 + 3) + 1, then 2 x 2 x 2 x 1.5
    assert worst + HEADROOM_SECONDS <= chat_timeout_seconds()


def test_ingestion_gets_the_patient_clients_which_would_not_fit_a_chat_turn() -> None:
    settings = _settings("bedrock")
    embedder = build_embedder(settings, interactive=False)
    index = build_index(settings, interactive=False)

    config = embedder._client.meta.config  # type: ignore[attr-defined]
    assert config.retries == {"mode": "adaptive", "total_max_attempts": 4}
    assert config.read_timeout == 30.0
    transport = index._client.transport  # type: ignore[attr-defined]
    assert (transport.get_connection().timeout, transport.max_retries) == (10.0, 2)
    # The reason the chat path must not use them:
    assert embed_worst_case(embedder) + search_worst_case(index) > chat_timeout_seconds()


def test_the_chat_service_is_built_with_the_interactive_clients(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from kefu import bootstrap

    built: list[tuple[str, bool]] = []
    real_embedder, real_index = bootstrap.build_embedder, bootstrap.build_index

    def embedder(settings: Settings, *, interactive: bool = True) -> Any:
        built.append(("embedder", interactive))
        return real_embedder(settings, interactive=interactive)

    def index(settings: Settings, *, interactive: bool = True) -> Any:
        built.append(("index", interactive))
        return real_index(settings, interactive=interactive)

    monkeypatch.setattr(bootstrap, "build_embedder", embedder)
    monkeypatch.setattr(bootstrap, "build_index", index)
    settings = _settings("bedrock").model_copy(
        update={
            "faq_threshold": 0.5,
            "passage_threshold": 0.5,
            "head_threshold": 0.5,
            "data_dir": tmp_path,
        }
    )

    service = bootstrap.build_chat_service(settings)

    assert sorted(built) == [("embedder", True), ("index", True)]
    assert (
        embed_worst_case(service.retriever.embedder)
        + search_worst_case(service.retriever.index)
        + HEADROOM_SECONDS
        <= chat_timeout_seconds()
    )
