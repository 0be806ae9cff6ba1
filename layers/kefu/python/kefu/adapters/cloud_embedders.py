"""Embedders that call AWS: Titan Text Embeddings v2 on Bedrock, and a SageMaker endpoint.

Both take their boto3 client as an argument (tests hand in a stubbed one); `create` builds one with
the retry and timeout settings an inference call needs: a chat turn's (`interactive`, which must
fail fast enough for the turn to degrade inside API Gateway's 29 seconds) or ingestion's (which
has minutes, and would rather wait out a throttled quota than fail a batch). boto3 and botocore
are imported inside functions, so a cold start that never embeds in the cloud does not pay for
them.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from kefu.errors import ConfigurationError, DependencyUnavailable

if TYPE_CHECKING:
    from kefu.ports import Vectors

T = TypeVar("T")

RuntimeService = Literal["bedrock-runtime", "sagemaker-runtime"]
RetryMode = Literal["standard", "adaptive"]

TITAN_V2_MODEL_ID = "amazon.titan-embed-text-v2:0"
TITAN_V2_DIMENSIONS = (256, 512, 1024)
# Titan v2 rejects an input over 50,000 characters or 8,192 tokens. For Chinese the token limit
# binds first (a character is one token or more), so the default cut is 4,000 characters: within
# 8,192 tokens even at two tokens a character, and far above the 600-character passages the
# chunker writes and the 2,000-character customer messages the API accepts.
TITAN_V2_MAX_INPUT_CHARS = 50_000
DEFAULT_TITAN_INPUT_CHARS = 4_000

# "Slow down": worth retrying after a pause, once botocore's own quick retries have given up.
_THROTTLING_CODES = frozenset({"ThrottlingException", "TooManyRequestsException", "Throttling"})
# The request itself is wrong: neither retrying nor degrading the turn can make it succeed.
_VALIDATION_CODES = frozenset({"ValidationException", "ValidationError"})


@dataclass(frozen=True, slots=True)
class CallBudget:
    """How long one inference call may take: botocore's timeouts and attempts (`max_attempts`
    counts the first), then how many more times a call the service throttled is retried after
    a pause (`ThrottleBackoff`)."""

    connect_timeout: float
    read_timeout: float
    max_attempts: int
    throttle_retries: int


# A chat turn embeds one question; a slow or throttled model should cost the customer seconds,
# and a declined turn with a hand-over offer, not the API's 29-second timeout.
INTERACTIVE = CallBudget(connect_timeout=1.0, read_timeout=3.0, max_attempts=2, throttle_retries=0)
# Ingestion embeds thousands of texts against a per-minute quota: patience beats a failed batch.
TITAN_BATCH = CallBudget(connect_timeout=3.0, read_timeout=30.0, max_attempts=4, throttle_retries=3)
SAGEMAKER_BATCH = CallBudget(
    connect_timeout=3.0, read_timeout=30.0, max_attempts=3, throttle_retries=3
)


def runtime_client(
    service: RuntimeService,
    budget: CallBudget,
    *,
    region: str | None = None,
    retry_mode: RetryMode = "standard",
    max_pool_connections: int = 10,
) -> Any:
    """A boto3 client for inference calls within `budget`: bounded botocore retries and short
    timeouts.

    The budget's `max_attempts` counts the first call too (botocore's `total_max_attempts`; its
    `max_attempts` key counts retries only). botocore's default 60-second read timeout is longer
    than a customer waits for an answer, and its default pool of 10 connections would serialise
    a wider pool of threads.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=region,
        retries={"mode": retry_mode, "total_max_attempts": budget.max_attempts},
        max_pool_connections=max_pool_connections,
        connect_timeout=budget.connect_timeout,
        read_timeout=budget.read_timeout,
    )
    return boto3.client(service, config=config)


@dataclass(frozen=True, slots=True)
class ThrottleBackoff:
    """Retries a call the service throttled, after botocore's own retries have given up.

    botocore spends its attempts within a second or two; a quota counted in requests per minute,
    as Bedrock's embedding quota is, needs longer pauses. The pauses grow exponentially and are
    drawn with full jitter, so that the threads of one batch do not come back in lockstep.
    """

    retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, retry: int) -> float:
        """The pause before retry number `retry` (0 for the first)."""
        return random.uniform(0.0, min(self.max_delay, self.base_delay * 2**retry))

    def run(self, call: Callable[[], T]) -> T:
        from botocore.exceptions import ClientError

        retry = 0
        while True:
            try:
                return call()
            except ClientError as exc:
                if _error_code(exc) not in _THROTTLING_CODES or retry >= self.retries:
                    raise
            self.sleep(self.delay(retry))
            retry += 1


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _domain_error(exc: Exception, dependency: str) -> Exception:
    """ConfigurationError for a request the service judged invalid; DependencyUnavailable for any
    other failure (throttled, down, unreachable, denied), so that the chat turn degrades.

    The request is built here and its text already cut to the model's limit, so a rejection
    means the deployment points at something that does not take it: a model id that is not Titan
    v2 or not enabled in the region, a dimension the model does not offer, an endpoint that does
    not exist. Retrying cannot help; the API answers 503 "not configured".
    """
    if _error_code(exc) in _VALIDATION_CODES:
        return ConfigurationError(
            f"{dependency} rejected the request; check the configured model or endpoint: {exc}"
        )
    return DependencyUnavailable(f"{dependency} failed: {exc}")


def _read_json(body: Any, source: str) -> Any:
    try:
        return json.loads(body.read())
    except ValueError as exc:
        raise DependencyUnavailable(f"{source} returned a body that is not JSON") from exc


def _unit_rows(rows: Any, *, count: int, dim: int, source: str) -> Vectors:
    """`rows` as a (count, dim) float32 matrix of unit vectors, or DependencyUnavailable.

    Each row is divided by its largest magnitude before its norm is taken, so that no finite
    non-zero vector under- or overflows to a zero or infinite norm. An all-zero row stays zero,
    as in the local embedders.
    """
    try:
        matrix = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DependencyUnavailable(f"{source} returned something other than vectors") from exc
    if matrix.shape != (count, dim):
        raise DependencyUnavailable(
            f"{source} returned vectors of shape {matrix.shape}, expected {(count, dim)}"
        )
    if not np.isfinite(matrix).all():
        raise DependencyUnavailable(f"{source} returned a vector with a non-finite value")
    scale = np.abs(matrix).max(axis=1, keepdims=True)
    matrix = matrix / np.where(scale == 0, 1.0, scale)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms == 0, 1.0, norms)).astype(np.float32)


def _embed_non_blank(
    texts: Sequence[str], dim: int, embed: Callable[[list[str]], Vectors]
) -> Vectors:
    """Embeds the texts that have content; a blank one gets a zero row without a call.

    Titan rejects an empty input, and a blank text has no meaning to match: a zero row scores
    nothing, as the hashing embedder's does.
    """
    out = np.zeros((len(texts), dim), dtype=np.float32)
    rows = [row for row, text in enumerate(texts) if text.strip()]
    if rows:
        out[rows] = embed([texts[row] for row in rows])
    return out


class TitanEmbedder:
    """Amazon Titan Text Embeddings v2 on Bedrock.

    The model embeds one text per call, so a batch runs as up to `max_workers` calls in flight.
    Titan makes no difference between questions and passages: both methods embed the same way.
    `model_id` may name another route to the same v2 model (a provisioned-throughput ARN); the
    request body is v2's. Texts longer than `max_input_chars` are cut to it before sending.
    """

    def __init__(
        self,
        *,
        client: Any,
        dimensions: int = 1024,
        model_id: str = TITAN_V2_MODEL_ID,
        max_workers: int = 8,
        max_input_chars: int = DEFAULT_TITAN_INPUT_CHARS,
        backoff: ThrottleBackoff | None = None,
    ) -> None:
        if dimensions not in TITAN_V2_DIMENSIONS:
            raise ValueError(f"Titan v2 embeds in 256, 512 or 1024 dimensions, not {dimensions}")
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        if not 0 < max_input_chars <= TITAN_V2_MAX_INPUT_CHARS:
            raise ValueError(
                f"max_input_chars must be 1 to {TITAN_V2_MAX_INPUT_CHARS:,}, not {max_input_chars}"
            )
        self.name = f"titan-embed-text-v2-{dimensions}"
        self.dim = dimensions
        self.model_id = model_id
        self._client = client
        self._max_workers = max_workers
        self._max_input_chars = max_input_chars
        self._backoff = backoff or ThrottleBackoff()

    @classmethod
    def create(
        cls,
        *,
        region: str | None = None,
        dimensions: int = 1024,
        model_id: str = TITAN_V2_MODEL_ID,
        max_workers: int = 8,
        interactive: bool = True,
    ) -> TitanEmbedder:
        """A Titan embedder with its own Bedrock client, within the `INTERACTIVE` budget for a
        chat turn or `TITAN_BATCH`'s for ingestion.

        A batch retries adaptively: its threads share the client, and the client-side rate
        limiter slows them all down together once Bedrock starts throttling. A chat turn retries
        in standard mode, as the adaptive limiter may hold a call back for longer than a
        customer waits.
        """
        budget = INTERACTIVE if interactive else TITAN_BATCH
        client = runtime_client(
            "bedrock-runtime",
            budget,
            region=region,
            retry_mode="standard" if interactive else "adaptive",
            max_pool_connections=max_workers,
        )
        return cls(
            client=client,
            dimensions=dimensions,
            model_id=model_id,
            max_workers=max_workers,
            backoff=ThrottleBackoff(retries=budget.throttle_retries),
        )

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return _embed_non_blank(texts, self.dim, self._embed)

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        return _embed_non_blank(texts, self.dim, self._embed)

    def _embed(self, texts: list[str]) -> Vectors:
        if len(texts) == 1:
            # A customer's question: no thread hop, so the call keeps the handler's trace context.
            rows = [self._embed_one(texts[0])]
        else:
            pool = ThreadPoolExecutor(
                min(self._max_workers, len(texts)), thread_name_prefix="titan-embed"
            )
            try:
                rows = list(pool.map(self._embed_one, texts))
            finally:
                # One failed text fails the batch: the texts not yet sent need not be.
                pool.shutdown(cancel_futures=True)
        return _unit_rows(rows, count=len(texts), dim=self.dim, source=self._source)

    @property
    def _source(self) -> str:
        return f"Bedrock model {self.model_id}"

    def _embed_one(self, text: str) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        body = json.dumps(
            {
                "inputText": text[: self._max_input_chars],
                "dimensions": self.dim,
                "normalize": True,
                "embeddingTypes": ["float"],
            },
            ensure_ascii=False,
        ).encode()
        try:
            response = self._backoff.run(
                lambda: self._client.invoke_model(
                    modelId=self.model_id,
                    body=body,
                    contentType="application/json",
                    accept="application/json",
                )
            )
            payload = _read_json(response["body"], self._source)
        except (ClientError, BotoCoreError) as exc:
            raise _domain_error(exc, self._source) from exc
        if not isinstance(payload, dict) or "embedding" not in payload:
            raise DependencyUnavailable(f"{self._source} returned no embedding")
        return payload["embedding"]


class SageMakerEmbedder:
    """Sentence embeddings from a SageMaker real-time endpoint.

    The contract with the container, which a Hugging Face TEI or a sentence-transformers one
    meets: the request is `{"inputs": ["text", ...]}` as application/json, up to `batch_size`
    texts a call; the response holds one vector per input, in input order, either as a JSON list
    of vectors or as `{"embeddings": [...]}`. The container truncates a text to its model's
    window (TEI with `--auto-truncate`; sentence-transformers by default).

    `dim` is given rather than discovered because the index is built before the first call.
    e5-family models were trained with "query: " and "passage: " prefixes: pass them as
    `query_prefix` and `passage_prefix`. Batches run one after another: the container batches
    on the GPU itself, so parallel calls would only queue there.
    """

    def __init__(
        self,
        *,
        client: Any,
        endpoint_name: str,
        dim: int,
        batch_size: int = 32,
        query_prefix: str = "",
        passage_prefix: str = "",
        name: str | None = None,
        backoff: ThrottleBackoff | None = None,
    ) -> None:
        if dim < 1 or batch_size < 1:
            raise ValueError(f"dim and batch_size must be at least 1, not {dim} and {batch_size}")
        self.name = name or f"sagemaker-{endpoint_name}"
        self.dim = dim
        self.endpoint_name = endpoint_name
        self._client = client
        self._batch_size = batch_size
        self._query_prefix = query_prefix
        self._passage_prefix = passage_prefix
        self._backoff = backoff or ThrottleBackoff()

    @classmethod
    def create(
        cls,
        *,
        endpoint_name: str,
        dim: int,
        region: str | None = None,
        batch_size: int = 32,
        query_prefix: str = "",
        passage_prefix: str = "",
        name: str | None = None,
        interactive: bool = True,
    ) -> SageMakerEmbedder:
        """A SageMaker embedder with its own runtime client (botocore's standard retries), within
        the `INTERACTIVE` budget for a chat turn or `SAGEMAKER_BATCH`'s for ingestion."""
        budget = INTERACTIVE if interactive else SAGEMAKER_BATCH
        client = runtime_client("sagemaker-runtime", budget, region=region)
        return cls(
            client=client,
            endpoint_name=endpoint_name,
            dim=dim,
            batch_size=batch_size,
            query_prefix=query_prefix,
            passage_prefix=passage_prefix,
            name=name,
            backoff=ThrottleBackoff(retries=budget.throttle_retries),
        )

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return _embed_non_blank(
            texts, self.dim, lambda batch: self._embed([self._query_prefix + t for t in batch])
        )

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        return _embed_non_blank(
            texts, self.dim, lambda batch: self._embed([self._passage_prefix + t for t in batch])
        )

    @property
    def _source(self) -> str:
        return f"SageMaker endpoint {self.endpoint_name}"

    def _embed(self, texts: list[str]) -> Vectors:
        batches = [
            self._embed_batch(texts[start : start + self._batch_size])
            for start in range(0, len(texts), self._batch_size)
        ]
        return np.concatenate(batches)

    def _embed_batch(self, texts: list[str]) -> Vectors:
        from botocore.exceptions import BotoCoreError, ClientError

        body = json.dumps({"inputs": texts}, ensure_ascii=False).encode()
        try:
            response = self._backoff.run(
                lambda: self._client.invoke_endpoint(
                    EndpointName=self.endpoint_name,
                    Body=body,
                    ContentType="application/json",
                    Accept="application/json",
                )
            )
            payload = _read_json(response["Body"], self._source)
        except (ClientError, BotoCoreError) as exc:
            raise _domain_error(exc, self._source) from exc
        vectors = payload.get("embeddings") if isinstance(payload, dict) else payload
        if not isinstance(vectors, list):
            raise DependencyUnavailable(
                f'{self._source} returned neither a list of vectors nor {{"embeddings": [...]}}'
            )
        return _unit_rows(vectors, count=len(texts), dim=self.dim, source=self._source)
