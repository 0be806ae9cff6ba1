"""The composition root: reads the settings and builds the service graph, once per process."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache

from kefu.chat import ChatService
from kefu.decision import resolve_thresholds
from kefu.errors import ConfigurationError, DependencyUnavailable
from kefu.handover import HandoverDesk
from kefu.observability import logger
from kefu.ports import (
    AnswerCache,
    ChatModel,
    Embedder,
    HandoverQueue,
    Insights,
    KnowledgeIndex,
    KnowledgeReader,
    Notifier,
    OrderSystem,
    SessionStore,
    TicketStore,
)
from kefu.retrieval import Retriever
from kefu.settings import Settings


def build_embedder(settings: Settings, *, interactive: bool = True) -> Embedder:
    """The configured embedder. A cloud one's client fails fast for a chat turn
    (`interactive`) or waits out throttling for ingestion (`interactive=False`)."""
    if settings.embedder == "e5":
        from kefu.adapters.embedders import E5Embedder

        return E5Embedder(model_path=settings.e5_model)
    if settings.embedder == "hashing":
        from kefu.adapters.embedders import HashingEmbedder

        return HashingEmbedder()
    if settings.embedder == "bedrock":
        from kefu.adapters.cloud_embedders import TitanEmbedder

        return TitanEmbedder.create(
            dimensions=settings.titan_dimensions,
            model_id=settings.bedrock_embedding_model_id,
            max_workers=settings.embedding_max_workers,
            interactive=interactive,
        )
    if not settings.sagemaker_embedding_endpoint or settings.sagemaker_embedding_dim is None:
        raise ConfigurationError(
            "KEFU_SAGEMAKER_EMBEDDING_ENDPOINT and KEFU_SAGEMAKER_EMBEDDING_DIM are required "
            "with KEFU_EMBEDDER=sagemaker"
        )
    from kefu.adapters.cloud_embedders import SageMakerEmbedder

    return SageMakerEmbedder.create(
        endpoint_name=settings.sagemaker_embedding_endpoint,
        dim=settings.sagemaker_embedding_dim,
        batch_size=settings.sagemaker_embedding_batch_size,
        query_prefix=settings.sagemaker_query_prefix,
        passage_prefix=settings.sagemaker_passage_prefix,
        interactive=interactive,
    )


def embedding_dim(settings: Settings) -> int:
    """The vector size of the configured embedder, known without building it."""
    if settings.embedder == "bedrock":
        return settings.titan_dimensions
    if settings.embedder == "sagemaker":
        if settings.sagemaker_embedding_dim is None:
            raise ConfigurationError("KEFU_SAGEMAKER_EMBEDDING_DIM is required")
        return settings.sagemaker_embedding_dim
    return 384  # multilingual-e5-small and the hashing embedder


def build_index(settings: Settings, *, interactive: bool = True) -> KnowledgeIndex:
    """The configured index. An OpenSearch client fails fast for a chat turn (`interactive`)
    or waits longer and retries more for ingestion (`interactive=False`)."""
    from kefu.scoring import Blend

    if settings.index == "embedded":
        from kefu.adapters.embedded_index import EmbeddedIndex

        return EmbeddedIndex(
            settings.index_path, blend=Blend(lexical_weight=settings.lexical_weight)
        )
    if not settings.opensearch_url:
        raise ConfigurationError("KEFU_OPENSEARCH_URL is required with KEFU_INDEX=opensearch")
    from kefu.adapters.opensearch import (
        BATCH_RETRIES,
        BATCH_TIMEOUT,
        INTERACTIVE_RETRIES,
        INTERACTIVE_TIMEOUT,
        OpenSearchIndex,
        connect,
    )

    timeout, retries = (
        (INTERACTIVE_TIMEOUT, INTERACTIVE_RETRIES)
        if interactive
        else (BATCH_TIMEOUT, BATCH_RETRIES)
    )
    client = connect(
        settings.opensearch_url,
        region=settings.aws_region,
        service=settings.opensearch_service,
        timeout=timeout,
        max_retries=retries,
    )
    return OpenSearchIndex(
        client,
        settings.opensearch_index,
        dim=embedding_dim(settings),
        blend=Blend(lexical_weight=settings.lexical_weight),
        chinese_analyzer=settings.opensearch_chinese_analyzer,
    )


def build_sessions(settings: Settings) -> SessionStore:
    if settings.sessions == "sqlite":
        from kefu.adapters.sessions import SqliteSessionStore

        return SqliteSessionStore(
            settings.sessions_path, ttl=timedelta(hours=settings.session_ttl_hours)
        )
    if not settings.sessions_table:
        raise ConfigurationError("KEFU_SESSIONS_TABLE is required with KEFU_SESSIONS=dynamodb")
    from kefu.adapters.sessions import DynamoDBSessionStore

    return DynamoDBSessionStore(
        settings.sessions_table, ttl=timedelta(hours=settings.session_ttl_hours)
    )


def build_tickets(settings: Settings) -> TicketStore:
    if settings.tickets == "sqlite":
        from kefu.adapters.tickets import SqliteTicketStore

        return SqliteTicketStore(settings.tickets_path)
    if not settings.tickets_table:
        raise ConfigurationError("KEFU_TICKETS_TABLE is required with KEFU_TICKETS=dynamodb")
    from kefu.adapters.tickets import DynamoDBTicketStore

    return DynamoDBTicketStore(settings.tickets_table)


def build_queue(settings: Settings) -> HandoverQueue:
    if settings.queue == "local":
        from kefu.adapters.queues import SqliteQueue

        return SqliteQueue(settings.queue_path)
    if not settings.escalation_queue_url:
        raise ConfigurationError("KEFU_ESCALATION_QUEUE_URL is required with KEFU_QUEUE=sqs")
    from kefu.adapters.queues import SqsQueue

    return SqsQueue(settings.escalation_queue_url)


def build_insights(settings: Settings) -> Insights | None:
    if settings.insights == "none":
        return None
    if settings.insights == "sqlite":
        from kefu.adapters.insights import SqliteInsights

        return SqliteInsights(settings.insights_path)
    if not settings.insights_table:
        raise ConfigurationError("KEFU_INSIGHTS_TABLE is required with KEFU_INSIGHTS=dynamodb")
    from kefu.adapters.insights import DynamoDBInsights

    return DynamoDBInsights(settings.insights_table)


def build_answer_cache(settings: Settings) -> AnswerCache | None:
    """Redis when a URL is given (or asked for), else an in-process LRU, or none."""
    choice = settings.answer_cache
    if choice == "none":
        return None
    if choice == "redis" or (choice == "auto" and settings.redis_url is not None):
        if settings.redis_url is None:
            raise ConfigurationError("KEFU_REDIS_URL is required with KEFU_ANSWER_CACHE=redis")
        from kefu.adapters.cache import RedisAnswerCache, secret_credentials

        return RedisAnswerCache(
            settings.redis_url.get_secret_value(),
            credentials=(
                secret_credentials(settings.redis_secret) if settings.redis_secret else None
            ),
        )
    from kefu.adapters.cache import MemoryAnswerCache

    return MemoryAnswerCache(settings.answer_cache_entries)


def build_notifiers(settings: Settings) -> list[Notifier]:
    """Every channel the helpdesk is told through; the log when none is configured."""
    from kefu.adapters import notifiers

    channels: list[Notifier] = []
    if settings.notify_topic_arn:
        channels.append(notifiers.SnsNotifier(settings.notify_topic_arn))
    if settings.webhook_secret_name:
        channels.append(notifiers.webhook_from_secret(settings.webhook_secret_name))
    elif settings.webhook_url:
        if settings.webhook_secret is None:
            raise ConfigurationError("KEFU_WEBHOOK_SECRET is required with KEFU_WEBHOOK_URL")
        channels.append(
            notifiers.WebhookNotifier(
                settings.webhook_url, settings.webhook_secret.get_secret_value()
            )
        )
    return channels or [notifiers.LogNotifier()]


def build_model(settings: Settings) -> ChatModel:
    """The configured chat model. Claude is used only when asked for (`KEFU_MODEL=bedrock` or
    `KEFU_MODEL=anthropic`): an `ANTHROPIC_API_KEY` in the environment does not switch a
    deployment away from the extractive model, so what answers customers is always explicit."""
    if settings.model == "extractive":
        from kefu.adapters.extractive import ExtractiveModel

        return ExtractiveModel()
    if settings.model == "anthropic":
        from kefu.adapters.anthropic_model import AnthropicClaude

        return AnthropicClaude.create(
            api_key=_anthropic_api_key(settings),
            model=settings.anthropic_model,
            max_tokens=settings.model_max_tokens,
        )
    from kefu.adapters.bedrock_model import BedrockClaude

    return BedrockClaude.create(
        model_id=settings.bedrock_model_id,
        region=settings.aws_region,
        max_tokens=settings.model_max_tokens,
    )


def _anthropic_api_key(settings: Settings) -> str:
    """`ANTHROPIC_API_KEY` if set, else the key in the Secrets Manager secret (read once: the
    client keeps it for the life of the process)."""
    if settings.anthropic_api_key is not None:
        return settings.anthropic_api_key.get_secret_value()
    if not settings.anthropic_api_key_secret:
        raise ConfigurationError(
            "ANTHROPIC_API_KEY or KEFU_ANTHROPIC_API_KEY_SECRET is required with "
            "KEFU_MODEL=anthropic"
        )
    from aws_lambda_powertools.utilities import parameters

    try:
        return str(parameters.get_secret(settings.anthropic_api_key_secret))
    except parameters.exceptions.GetParameterError as exc:
        raise DependencyUnavailable(f"Anthropic API key unreadable: {exc}") from exc


def build_orders(settings: Settings) -> OrderSystem | None:
    if settings.orders == "none":
        return None
    from kefu.adapters.orders import HttpsOrderSystem, SampleOrderBook, secret_api_key

    if settings.orders == "sample":
        return SampleOrderBook()
    if not settings.orders_url or not settings.orders_api_key_secret:
        raise ConfigurationError(
            "KEFU_ORDERS_URL and KEFU_ORDERS_API_KEY_SECRET are required with KEFU_ORDERS=https"
        )
    return HttpsOrderSystem(
        settings.orders_url, api_key=secret_api_key(settings.orders_api_key_secret)
    )


def build_retriever(
    settings: Settings, *, embedder: Embedder, index: KnowledgeReader, use_head: bool = True
) -> Retriever:
    """A retriever with the thresholds the settings resolve to for this embedder; without
    `use_head`, one that ranks and accepts FAQ entries by similarity alone."""
    thresholds = resolve_thresholds(settings, embedder.name)
    return Retriever(embedder=embedder, index=index, thresholds=thresholds, use_head=use_head)


def build_chat_service(
    settings: Settings, *, embedder: Embedder | None = None, index: KnowledgeReader | None = None
) -> ChatService:
    from kefu.memory import Memory, MemoryPolicy
    from kefu.ports import ConversationModel

    embedder = embedder or build_embedder(settings)
    index = index or build_index(settings)
    model = build_model(settings)
    summarizer = model if isinstance(model, ConversationModel) else None
    sessions = build_sessions(settings)
    return ChatService(
        retriever=build_retriever(settings, embedder=embedder, index=index),
        model=model,
        sessions=sessions,
        orders=build_orders(settings),
        tenant=settings.tenant,
        memory=Memory(MemoryPolicy(budget_tokens=settings.memory_tokens), summarizer),
        mask_patterns=[re.compile(pattern) for pattern in settings.mask_patterns],
        desk=build_desk(settings, sessions=sessions),
        insights=build_insights(settings),
        cache=build_answer_cache(settings),
        cache_ttl_seconds=settings.answer_cache_ttl_seconds,
        handover_after_failures=settings.handover_after_failures,
        low_confidence=settings.low_confidence,
    )


def build_desk(settings: Settings, *, sessions: SessionStore | None = None) -> HandoverDesk:
    """The hand-over desk: tickets, the escalation queue and the sessions they come from."""
    from kefu.handover import HandoverDesk

    return HandoverDesk(
        tickets=build_tickets(settings),
        queue=build_queue(settings),
        sessions=sessions or build_sessions(settings),
        tenant=settings.tenant,
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


@lru_cache(maxsize=1)
def get_embedder() -> Embedder:
    return build_embedder(get_settings())


@lru_cache(maxsize=1)
def get_index() -> KnowledgeIndex:
    """The process's index: the chat service reads it, and the local stack ingests into it."""
    return build_index(get_settings())


@lru_cache(maxsize=1)
def get_chat_service() -> ChatService:
    return build_chat_service(get_settings(), embedder=get_embedder(), index=get_index())


# How Lambda started the environment (its AWS_LAMBDA_INITIALIZATION_TYPE): in these two, init
# runs ahead of any request (a SnapStart version is snapshotted after it), so what it builds no
# customer waits for.
AHEAD_OF_REQUESTS = frozenset({"snap-start", "provisioned-concurrency"})


def build_ahead(initialization_type: str | None) -> bool:
    """Build the chat service now if the environment starts ahead of its requests; True when
    built. Nothing is connected: clients connect at their first call, so no connection is
    snapshotted. A failure is logged and left to the first request, which builds again and
    answers a configuration error as such."""
    if initialization_type not in AHEAD_OF_REQUESTS:
        return False
    try:
        settings = get_settings()
        if settings.model == "anthropic" and settings.anthropic_api_key is None:
            # The key, read from its secret into the snapshot, would be kept for the version's
            # life: a rotated key would fail every restored environment. The first request
            # builds the service and reads the key then.
            return False
        get_chat_service()
    except Exception:
        logger.exception("the chat service could not be built ahead; the first request retries")
        return False
    return True


@lru_cache(maxsize=1)
def get_desk() -> HandoverDesk:
    """The desk agents and the escalation function use: no embedder, index or model."""
    return build_desk(get_settings())
