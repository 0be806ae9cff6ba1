"""The Bedrock Titan and SageMaker embedders, against stubbed botocore clients (no network)."""

from __future__ import annotations

import copy
import functools
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import EndpointConnectionError
from botocore.response import StreamingBody
from botocore.stub import Stubber
from hypothesis import given, settings
from hypothesis import strategies as st

from kefu.adapters.cloud_embedders import (
    DEFAULT_TITAN_INPUT_CHARS,
    SAGEMAKER_BATCH,
    TITAN_BATCH,
    CallBudget,
    SageMakerEmbedder,
    ThrottleBackoff,
    TitanEmbedder,
    runtime_client,
)
from kefu.errors import ConfigurationError, DependencyUnavailable
from tests.conftest import EVENTS, LambdaContext

TITAN = "amazon.titan-embed-text-v2:0"


class JsonBody:
    """Equals a request body that decodes to `expected`, whatever its spacing and key order."""

    def __init__(self, expected: Any) -> None:
        self.expected = expected

    def __eq__(self, other: object) -> bool:
        return isinstance(other, bytes | str) and json.loads(other) == self.expected

    def __hash__(self) -> int:
        return hash(json.dumps(self.expected, sort_keys=True))

    def __repr__(self) -> str:
        return f"JsonBody({self.expected!r})"


def streaming_json(payload: Any) -> StreamingBody:
    data = json.dumps(payload).encode()
    return StreamingBody(io.BytesIO(data), len(data))


def one_hot(position: int, dim: int, scale: float = 1.0) -> list[float]:
    vector = [0.0] * dim
    vector[position] = scale
    return vector


class RecordedSleep:
    """Stands in for `time.sleep`: records the pauses instead of taking them."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


@pytest.fixture
def sleep() -> RecordedSleep:
    return RecordedSleep()


@pytest.fixture
def bedrock() -> Any:
    return runtime_client("bedrock-runtime", TITAN_BATCH, region="us-east-1")


@pytest.fixture
def bedrock_stub(bedrock: Any) -> Iterator[Stubber]:
    with Stubber(bedrock) as stub:
        yield stub
        stub.assert_no_pending_responses()


@pytest.fixture
def sagemaker() -> Any:
    return runtime_client("sagemaker-runtime", SAGEMAKER_BATCH, region="us-east-1")


@pytest.fixture
def sagemaker_stub(sagemaker: Any) -> Iterator[Stubber]:
    with Stubber(sagemaker) as stub:
        yield stub
        stub.assert_no_pending_responses()


def titan_request(text: str, dimensions: int = 1024) -> dict[str, Any]:
    return {
        "modelId": TITAN,
        "contentType": "application/json",
        "accept": "application/json",
        "body": JsonBody(
            {
                "inputText": text,
                "dimensions": dimensions,
                "normalize": True,
                "embeddingTypes": ["float"],
            }
        ),
    }


def titan_response(embedding: list[float]) -> dict[str, Any]:
    return {
        "body": streaming_json(
            {
                "embedding": embedding,
                "inputTextTokenCount": 3,
                "embeddingsByType": {"float": embedding},
            }
        ),
        "contentType": "application/json",
    }


def add_throttle(stub: Stubber, operation: str, code: str = "ThrottlingException") -> None:
    stub.add_client_error(operation, service_error_code=code, http_status_code=429)


# Titan


def test_titan_sends_the_v2_request_and_returns_a_unit_vector(
    bedrock: Any, bedrock_stub: Stubber
) -> None:
    # Given Titan configured for 256 dimensions, answering an unnormalised vector
    embedder = TitanEmbedder(client=bedrock, dimensions=256)
    bedrock_stub.add_response(
        "invoke_model",
        titan_response([3.0, 4.0] + [0.0] * 254),
        titan_request("我的快递到哪了", dimensions=256),
    )

    # When a question is embedded
    vectors = embedder.embed_queries(["我的快递到哪了"])

    # Then one float32 unit vector comes back, and the name says model and size
    assert vectors.dtype == np.float32
    assert vectors.shape == (1, 256)
    assert vectors[0, :2] == pytest.approx([0.6, 0.8])
    assert embedder.name == "titan-embed-text-v2-256"
    assert embedder.dim == 256


def test_titan_embeds_passages_exactly_as_queries(bedrock: Any, bedrock_stub: Stubber) -> None:
    embedder = TitanEmbedder(client=bedrock)
    for _ in range(2):
        bedrock_stub.add_response(
            "invoke_model", titan_response(one_hot(0, 1024)), titan_request("Warranty: one year")
        )

    query = embedder.embed_queries(["Warranty: one year"])
    passage = embedder.embed_passages(["Warranty: one year"])

    assert np.array_equal(query, passage)


def test_titan_cuts_a_long_text_to_the_input_limit_before_sending(
    bedrock: Any, bedrock_stub: Stubber
) -> None:
    embedder = TitanEmbedder(client=bedrock)
    long_text = "退货政策" * 5_000  # 20,000 Chinese characters: far over 8,192 tokens
    bedrock_stub.add_response(
        "invoke_model",
        titan_response(one_hot(0, 1024)),
        titan_request(long_text[:DEFAULT_TITAN_INPUT_CHARS]),
    )

    assert embedder.embed_passages([long_text]).shape == (1, 1024)


def test_titan_returns_an_empty_matrix_for_no_texts_and_zero_rows_for_blank_ones(
    bedrock: Any, bedrock_stub: Stubber
) -> None:
    # Given a stub that answers exactly one call, for the only text with content
    embedder = TitanEmbedder(client=bedrock)
    bedrock_stub.add_response(
        "invoke_model", titan_response(one_hot(1, 1024)), titan_request("refund")
    )

    assert embedder.embed_queries([]).shape == (0, 1024)
    vectors = embedder.embed_queries(["", "refund", "   "])

    assert vectors.shape == (3, 1024)
    assert not vectors[0].any()
    assert not vectors[2].any()
    assert vectors[1, 1] == pytest.approx(1.0)


def test_titan_embeds_a_batch_concurrently_within_the_worker_bound_in_order(bedrock: Any) -> None:
    # Given a Bedrock that answers each text with a one-hot vector at the text's number, and that
    # holds every call until four are in flight at once (a sequential embedder would time out)
    texts = [f"question {i}" for i in range(8)]
    all_in = threading.Barrier(4, timeout=5)
    lock = threading.Lock()
    in_flight = peak = 0
    sent: list[dict[str, Any]] = []

    def answer(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        nonlocal in_flight, peak
        body = json.loads(params["body"])
        with lock:
            sent.append(body)
            in_flight += 1
            peak = max(peak, in_flight)
        all_in.wait()
        with lock:
            in_flight -= 1
        number = int(body["inputText"].split()[-1])
        return AWSResponse(None, 200, {}, None), titan_response(one_hot(number, 1024, scale=2.0))

    bedrock.meta.events.register("before-call.bedrock-runtime.InvokeModel", answer)
    embedder = TitanEmbedder(client=bedrock, max_workers=4)

    # When the batch is embedded
    vectors = embedder.embed_passages(texts)

    # Then every text went out once, never more than four at a time, and row i is text i's
    assert sorted(body["inputText"] for body in sent) == sorted(texts)
    assert peak == 4
    assert np.array_equal(vectors, np.eye(8, 1024, dtype=np.float32))


def test_titan_retries_a_throttled_call_with_backoff_then_succeeds(
    bedrock: Any, bedrock_stub: Stubber, sleep: RecordedSleep
) -> None:
    # Given Bedrock throttles twice more after botocore's own retries, then answers
    embedder = TitanEmbedder(client=bedrock, backoff=ThrottleBackoff(retries=3, sleep=sleep))
    add_throttle(bedrock_stub, "invoke_model")
    add_throttle(bedrock_stub, "invoke_model")
    bedrock_stub.add_response(
        "invoke_model", titan_response(one_hot(0, 1024)), titan_request("order status")
    )

    # When a question is embedded
    vectors = embedder.embed_queries(["order status"])

    # Then it succeeds on the third attempt, after two pauses
    assert vectors[0, 0] == pytest.approx(1.0)
    assert len(sleep.pauses) == 2


def test_titan_reports_the_dependency_unavailable_when_throttling_persists(
    bedrock: Any, bedrock_stub: Stubber, sleep: RecordedSleep
) -> None:
    embedder = TitanEmbedder(client=bedrock, backoff=ThrottleBackoff(retries=2, sleep=sleep))
    for _ in range(3):
        add_throttle(bedrock_stub, "invoke_model")

    with pytest.raises(DependencyUnavailable, match="ThrottlingException"):
        embedder.embed_queries(["order status"])
    assert len(sleep.pauses) == 2  # three attempts in all


@pytest.mark.parametrize(
    "code",
    [
        "ServiceUnavailableException",
        "InternalServerException",
        "ModelTimeoutException",
        "AccessDeniedException",
    ],
)
def test_titan_maps_other_service_failures_to_dependency_unavailable_without_retrying(
    bedrock: Any, bedrock_stub: Stubber, sleep: RecordedSleep, code: str
) -> None:
    embedder = TitanEmbedder(client=bedrock, backoff=ThrottleBackoff(sleep=sleep))
    bedrock_stub.add_client_error("invoke_model", service_error_code=code, http_status_code=503)

    with pytest.raises(DependencyUnavailable, match=code):
        embedder.embed_queries(["order status"])
    assert sleep.pauses == []


def test_titan_maps_an_unreachable_endpoint_to_dependency_unavailable(bedrock: Any) -> None:
    def unreachable(**_: Any) -> None:
        raise EndpointConnectionError(
            endpoint_url="https://bedrock-runtime.us-east-1.amazonaws.com"
        )

    bedrock.meta.events.register("before-call.bedrock-runtime.InvokeModel", unreachable)

    with pytest.raises(DependencyUnavailable, match="Could not connect"):
        TitanEmbedder(client=bedrock).embed_queries(["order status"])


@pytest.mark.parametrize(
    "message",
    [
        "The provided model identifier is invalid.",
        "Malformed input request: #/dimensions: 768 is not a valid enum value",
    ],
)
def test_titan_turns_a_rejected_request_into_a_configuration_error_without_retrying(
    bedrock: Any, bedrock_stub: Stubber, sleep: RecordedSleep, message: str
) -> None:
    # Given Bedrock rejects the request: the text is cut to the limit before it is sent, so what
    # it rejects is the deployment's model id or dimensions
    bedrock_stub.add_client_error(
        "invoke_model", service_error_code="ValidationException", service_message=message
    )
    embedder = TitanEmbedder(client=bedrock, backoff=ThrottleBackoff(sleep=sleep))

    # When a question is embedded, then it is a configuration error naming model and cause
    with pytest.raises(ConfigurationError, match=f"Bedrock model {TITAN} rejected") as raised:
        embedder.embed_queries(["order status"])
    assert message in str(raised.value)
    assert sleep.pauses == []


def test_a_titan_rejection_reaches_the_customer_as_a_json_503_not_a_500(
    bedrock: Any, bedrock_stub: Stubber, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the chat Lambda wired to a Titan model id that Bedrock rejects
    from functions.chat.handler import lambda_handler
    from kefu import api
    from kefu.adapters.embedded_index import EmbeddedIndex
    from kefu.adapters.extractive import ExtractiveModel
    from kefu.adapters.sessions import SqliteSessionStore
    from kefu.chat import ChatService
    from kefu.decision import Thresholds
    from kefu.retrieval import Retriever

    bedrock_stub.add_client_error(
        "invoke_model",
        service_error_code="ValidationException",
        service_message="The provided model identifier is invalid.",
    )
    service = ChatService(
        retriever=Retriever(
            embedder=TitanEmbedder(client=bedrock),
            index=EmbeddedIndex(":memory:"),
            thresholds=Thresholds(fit=0.5, head=0.5, similarity=0.5, passage=0.5),
        ),
        model=ExtractiveModel(),
        sessions=SqliteSessionStore(tmp_path / "sessions.sqlite3"),
    )
    monkeypatch.setattr(api, "get_chat_service", lambda: service)
    event = copy.deepcopy(json.loads((EVENTS / "chat_request.json").read_text()))

    # When a customer asks a question
    response = lambda_handler(event, LambdaContext())

    # Then the API answers 503 "not configured" in JSON
    assert response["statusCode"] == 503
    assert json.loads(response["body"])["error"]["code"] == "not_configured"


def test_titan_rejects_a_vector_of_the_wrong_size(bedrock: Any, bedrock_stub: Stubber) -> None:
    bedrock_stub.add_response("invoke_model", titan_response([1.0] * 512))

    with pytest.raises(DependencyUnavailable, match=r"shape \(1, 512\), expected \(1, 1024\)"):
        TitanEmbedder(client=bedrock).embed_queries(["order status"])


def test_titan_refuses_a_size_the_model_does_not_offer(bedrock: Any) -> None:
    with pytest.raises(ValueError, match="256, 512 or 1024"):
        TitanEmbedder(client=bedrock, dimensions=768)


# SageMaker


def sagemaker_request(texts: list[str]) -> dict[str, Any]:
    return {
        "EndpointName": "kefu-embed",
        "Body": JsonBody({"inputs": texts}),
        "ContentType": "application/json",
        "Accept": "application/json",
    }


def sagemaker_response(payload: Any) -> dict[str, Any]:
    return {"Body": streaming_json(payload), "ContentType": "application/json"}


def test_sagemaker_sends_prefixed_batches_and_keeps_the_order(
    sagemaker: Any, sagemaker_stub: Stubber
) -> None:
    # Given an e5 endpoint taking two texts a call, answering in both documented shapes
    embedder = SageMakerEmbedder(
        client=sagemaker, endpoint_name="kefu-embed", dim=4, batch_size=2, query_prefix="query: "
    )
    sagemaker_stub.add_response(
        "invoke_endpoint",
        sagemaker_response([one_hot(0, 4, 3.0), one_hot(1, 4, 3.0)]),
        sagemaker_request(["query: a", "query: b"]),
    )
    sagemaker_stub.add_response(
        "invoke_endpoint",
        sagemaker_response({"embeddings": [one_hot(2, 4, 0.5), one_hot(3, 4, 0.5)]}),
        sagemaker_request(["query: c", "query: d"]),
    )
    sagemaker_stub.add_response(
        "invoke_endpoint",
        sagemaker_response([[1.0, 1.0, 1.0, 1.0]]),
        sagemaker_request(["query: e"]),
    )

    # When five questions are embedded
    vectors = embedder.embed_queries(["a", "b", "c", "d", "e"])

    # Then three calls went out, and the rows are unit vectors in the questions' order
    assert vectors.dtype == np.float32
    assert np.allclose(vectors[:4], np.eye(4))
    assert vectors[4] == pytest.approx([0.5] * 4)
    assert embedder.name == "sagemaker-kefu-embed"


def test_sagemaker_embeds_passages_with_the_passage_prefix(
    sagemaker: Any, sagemaker_stub: Stubber
) -> None:
    embedder = SageMakerEmbedder(
        client=sagemaker,
        endpoint_name="kefu-embed",
        dim=4,
        query_prefix="query: ",
        passage_prefix="passage: ",
    )
    sagemaker_stub.add_response(
        "invoke_endpoint",
        sagemaker_response([one_hot(0, 4)]),
        sagemaker_request(["passage: 七天无理由退货"]),
    )

    assert embedder.embed_passages(["七天无理由退货", ""]).shape == (2, 4)
    assert embedder.embed_passages([]).shape == (0, 4)


def test_sagemaker_retries_a_throttled_call_then_succeeds(
    sagemaker: Any, sagemaker_stub: Stubber, sleep: RecordedSleep
) -> None:
    embedder = SageMakerEmbedder(
        client=sagemaker,
        endpoint_name="kefu-embed",
        dim=4,
        backoff=ThrottleBackoff(sleep=sleep),
    )
    add_throttle(sagemaker_stub, "invoke_endpoint")
    sagemaker_stub.add_response(
        "invoke_endpoint", sagemaker_response([one_hot(0, 4)]), sagemaker_request(["a"])
    )

    assert embedder.embed_queries(["a"])[0, 0] == pytest.approx(1.0)
    assert len(sleep.pauses) == 1


@pytest.mark.parametrize(
    ("code", "raised"),
    [
        ("ModelError", DependencyUnavailable),
        ("ServiceUnavailable", DependencyUnavailable),
        ("InternalFailure", DependencyUnavailable),
        ("ValidationError", ConfigurationError),
    ],
)
def test_sagemaker_maps_service_errors_to_domain_errors(
    sagemaker: Any, sagemaker_stub: Stubber, code: str, raised: type[Exception]
) -> None:
    sagemaker_stub.add_client_error("invoke_endpoint", service_error_code=code)

    with pytest.raises(raised, match="SageMaker endpoint kefu-embed"):
        SageMakerEmbedder(client=sagemaker, endpoint_name="kefu-embed", dim=4).embed_queries(["a"])


@pytest.mark.parametrize(
    "payload",
    [
        [[1.0, 0.0, 0.0, 0.0]],  # one vector for two texts
        {"vectors": [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]},  # an unknown shape
        "not vectors",
    ],
)
def test_sagemaker_reports_a_response_that_breaks_the_contract(
    sagemaker: Any, sagemaker_stub: Stubber, payload: Any
) -> None:
    sagemaker_stub.add_response("invoke_endpoint", sagemaker_response(payload))

    with pytest.raises(DependencyUnavailable, match="SageMaker endpoint kefu-embed"):
        SageMakerEmbedder(client=sagemaker, endpoint_name="kefu-embed", dim=4).embed_queries(
            ["a", "b"]
        )


finite_vectors = st.lists(
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=8, max_size=8).filter(any),
    min_size=1,
    max_size=5,
)


@functools.cache
def shared_sagemaker_client() -> Any:
    """One client for every example of the property test: building one takes milliseconds."""
    return runtime_client("sagemaker-runtime", SAGEMAKER_BATCH, region="us-east-1")


@given(returned=finite_vectors)
@settings(deadline=None)
def test_any_non_zero_vector_the_endpoint_returns_comes_out_unit_length(
    returned: list[list[float]],
) -> None:
    client = shared_sagemaker_client()
    embedder = SageMakerEmbedder(client=client, endpoint_name="kefu-embed", dim=8)
    with Stubber(client) as stub:
        stub.add_response("invoke_endpoint", sagemaker_response(returned))
        vectors = embedder.embed_passages([f"passage {i}" for i in range(len(returned))])

    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# The client factory and the backoff


def test_runtime_client_sets_region_retries_and_timeouts() -> None:
    budget = CallBudget(connect_timeout=2.0, read_timeout=7.0, max_attempts=5, throttle_retries=1)
    client = runtime_client(
        "bedrock-runtime",
        budget,
        region="eu-central-1",
        retry_mode="adaptive",
        max_pool_connections=16,
    )

    config = client.meta.config
    assert client.meta.region_name == "eu-central-1"
    assert config.retries == {"mode": "adaptive", "total_max_attempts": 5}
    assert config.max_pool_connections == 16
    assert (config.connect_timeout, config.read_timeout) == (2.0, 7.0)


def test_the_embedders_build_their_own_clients_for_the_region() -> None:
    titan = TitanEmbedder.create(region="ap-northeast-1", dimensions=512, max_workers=4)
    sagemaker = SageMakerEmbedder.create(endpoint_name="kefu-embed", dim=384, region="cn-north-1")

    assert (titan.name, titan.dim) == ("titan-embed-text-v2-512", 512)
    assert titan._client.meta.region_name == "ap-northeast-1"
    assert titan._client.meta.config.max_pool_connections == 4  # one per worker
    assert (sagemaker.name, sagemaker.dim) == ("sagemaker-kefu-embed", 384)
    assert sagemaker._client.meta.region_name == "cn-north-1"


@pytest.mark.parametrize(
    "create",
    [
        functools.partial(TitanEmbedder.create, region="us-east-1"),
        functools.partial(SageMakerEmbedder.create, endpoint_name="e", dim=4, region="us-east-1"),
    ],
)
def test_an_embedder_built_for_a_chat_turn_gives_up_within_seconds(create: Any) -> None:
    embedder = create()

    config = embedder._client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (1.0, 3.0)
    # Standard mode: the adaptive rate limiter could hold a call back longer than a customer waits
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}
    assert embedder._backoff.retries == 0


def test_an_embedder_built_for_ingestion_waits_out_throttling() -> None:
    titan = TitanEmbedder.create(region="us-east-1", interactive=False)
    sagemaker = SageMakerEmbedder.create(
        endpoint_name="kefu-embed", dim=384, region="us-east-1", interactive=False
    )

    titan_config, sagemaker_config = titan._client.meta.config, sagemaker._client.meta.config
    # a rate limiter shared by the batch's workers
    assert titan_config.retries == {"mode": "adaptive", "total_max_attempts": 4}
    assert (titan_config.connect_timeout, titan_config.read_timeout) == (3.0, 30.0)
    assert sagemaker_config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert sagemaker_config.read_timeout == 30.0
    assert titan._backoff.retries == sagemaker._backoff.retries == 3


def test_backoff_pauses_grow_exponentially_up_to_the_cap() -> None:
    backoff = ThrottleBackoff(base_delay=0.5, max_delay=4.0)

    for retry, ceiling in enumerate([0.5, 1.0, 2.0, 4.0, 4.0]):
        pauses = [backoff.delay(retry) for _ in range(200)]
        assert all(0.0 <= pause <= ceiling for pause in pauses)
        assert max(pauses) > ceiling / 2  # jittered across the range, not stuck at zero


def test_backoff_does_not_retry_an_error_that_is_not_throttling(sleep: RecordedSleep) -> None:
    calls = 0

    def fails() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("not a service error")

    with pytest.raises(RuntimeError):
        ThrottleBackoff(sleep=sleep).run(fails)
    assert (calls, sleep.pauses) == (1, [])
