"""The one settings model. It reads `KEFU_*` from the environment and is validated at cold start."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEFU_", frozen=True, extra="ignore")

    tenant: str = "default"
    model: Literal["extractive", "bedrock", "anthropic"] = "extractive"
    embedder: Literal["e5", "hashing", "bedrock", "sagemaker"] = "e5"
    index: Literal["embedded", "opensearch"] = "embedded"
    sessions: Literal["sqlite", "dynamodb"] = "sqlite"
    orders: Literal["none", "sample", "https"] = Field(
        default="none",
        description="The order system: none, the bundled sample book (make run), or HTTPS.",
    )
    orders_url: str | None = Field(default=None, description="The order API (KEFU_ORDERS=https).")
    orders_api_key_secret: str | None = Field(
        default=None, description="The Secrets Manager secret holding the order API's key."
    )

    data_dir: Path = Field(default=Path(".kefu"), description="Where the local stack keeps state.")
    sessions_table: str | None = None
    opensearch_url: str | None = Field(
        default=None, description="https endpoint of the OpenSearch domain (KEFU_INDEX=opensearch)."
    )
    opensearch_index: str = "kefu-kb"
    opensearch_service: Literal["es", "aoss"] = "es"
    opensearch_chinese_analyzer: str = "smartcn"
    aws_region: str = Field(
        default="us-east-1", validation_alias=AliasChoices("KEFU_AWS_REGION", "AWS_REGION")
    )
    session_ttl_hours: int = Field(default=72, gt=0)
    mask_patterns: list[str] = Field(
        default=[],
        description="More regular expressions to mask in messages and answers (a JSON list), "
        "besides phones, e-mails, identity and card numbers.",
    )
    memory_tokens: int = Field(
        default=2048,
        ge=256,
        le=32768,
        description="The conversation kept verbatim; older turns fold into a rolling summary.",
    )
    bedrock_model_id: str = Field(
        default="anthropic.claude-3-5-haiku-20241022-v1:0",
        description="The Converse model that writes answers (KEFU_MODEL=bedrock).",
    )
    anthropic_model: str = Field(
        default="claude-haiku-5-5",
        description="The Anthropic API model that writes answers (KEFU_MODEL=anthropic).",
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("KEFU_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"),
        description="The Anthropic API key (local runs); in AWS, the secret below.",
    )
    anthropic_api_key_secret: str | None = Field(
        default=None,
        description="The Secrets Manager secret holding the Anthropic API key, if not given.",
    )
    model_max_tokens: int = Field(default=512, gt=0, le=4096, description="An answer's length cap.")
    bedrock_embedding_model_id: str = "amazon.titan-embed-text-v2:0"
    titan_dimensions: int = Field(
        default=1024, description="Titan v2 vector size: 256, 512 or 1024."
    )
    embedding_max_workers: int = Field(
        default=8, gt=0, description="Titan calls in flight while embedding a batch."
    )
    e5_model: Path | None = Field(
        default=None,
        description="An e5 image tuned on the KB (python -m kb_ingest.tuning); else the bundled.",
    )
    sagemaker_embedding_endpoint: str | None = None
    sagemaker_embedding_dim: int | None = Field(default=None, gt=0)
    sagemaker_embedding_batch_size: int = Field(default=32, gt=0)
    sagemaker_query_prefix: str = Field(default="", description='"query: " for e5 models.')
    sagemaker_passage_prefix: str = Field(default="", description='"passage: " for e5 models.')
    # --- hand-over to humans (kefu.handover) -----------------------------------------------
    tickets: Literal["sqlite", "dynamodb"] = "sqlite"
    tickets_table: str | None = None
    queue: Literal["local", "sqs"] = Field(
        default="local", description="The escalation queue: SQLite-backed locally, or SQS."
    )
    escalation_queue_url: str | None = None
    insights: Literal["sqlite", "dynamodb", "none"] = Field(
        default="sqlite", description="Where turn and rating records for the reports go."
    )
    insights_table: str | None = None
    idempotency_table: str | None = Field(
        default=None, description="The escalation function's Powertools idempotency table."
    )
    notify_topic_arn: str | None = Field(
        default=None, description="The SNS topic told of every new ticket."
    )
    webhook_url: str | None = Field(
        default=None, description="A helpdesk webhook told of every new ticket (local runs)."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="The webhook's HMAC-SHA256 signing secret (local runs)."
    )
    webhook_secret_name: str | None = Field(
        default=None,
        description='A Secrets Manager secret holding {"url": ..., "secret": ...} for the webhook.',
    )
    agent_auth: Literal["api_key", "iam"] = Field(
        default="api_key",
        description="How agent routes are authorised: API Gateway's IAM auth, or an agent key.",
    )
    agent_api_key: SecretStr | None = Field(
        default=None, description="The agents' key (X-Agent-Key) when agent_auth is api_key."
    )
    handover_after_failures: int = Field(
        default=2, ge=1, le=10, description="Consecutive declined or unsure turns to hand over."
    )
    low_confidence: float = Field(
        default=0.35, ge=0.0, le=1.0, description="An answer below this confidence is unsure."
    )
    sweep_after_seconds: int = Field(
        default=300, gt=0, description="A pending ticket this old is queued again by the sweeper."
    )
    export_bucket: str | None = Field(
        default=None, description="The S3 bucket that receives the monthly training export."
    )

    # --- the answer cache (kefu.answer_cache) -------------------------------------------
    answer_cache: Literal["auto", "redis", "memory", "none"] = Field(
        default="auto",
        description="Where answers to frequent questions are kept: Redis, this process "
        "(an LRU), or nowhere. auto: Redis when KEFU_REDIS_URL is set, else the LRU.",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="redis:// or rediss://[user:password@]host:port/db (ElastiCache: TLS).",
    )
    redis_secret: str | None = Field(
        default=None,
        description='A Secrets Manager secret holding {"username", "password"} for '
        "KEFU_REDIS_URL (ElastiCache's user), read for each new connection.",
    )
    answer_cache_ttl_seconds: int = Field(
        default=3600, ge=1, le=7 * 24 * 3600, description="How long a cached answer is served."
    )
    answer_cache_entries: int = Field(
        default=10_000, ge=1, description="The in-process LRU's size, in answers."
    )

    cors_allow_origins: list[str] = Field(
        default=[],
        description="Origins a browser page may call the API from (a JSON list). None by "
        "default: no cross-origin access (the local web chat is served from the API's origin).",
    )

    # The decision's thresholds (`kefu.decision.resolve_thresholds`); unset, the embedder's
    # built-in ones.
    faq_threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="What an FAQ entry's fit needs (with a head)."
    )
    similarity_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="What an FAQ entry's similarity needs without a head (unset: the FAQ one "
        "if given, else built in).",
    )
    head_threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="What the FAQ head's own probability needs."
    )
    passage_threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="What a passage's similarity needs."
    )
    lexical_weight: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of BM25 in the index's ranking of hits."
    )

    @field_validator("mask_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                message = f"mask pattern {pattern!r} is not a regular expression: {exc}"
                raise ValueError(message) from exc
        return patterns

    @field_validator("titan_dimensions")
    @classmethod
    def _titan_offers_the_size(cls, value: int) -> int:
        if value not in (256, 512, 1024):
            raise ValueError("Titan v2 embeds in 256, 512 or 1024 dimensions")
        return value

    @property
    def index_path(self) -> Path:
        """One index per embedder: vectors of two embedders (or two tuned images) never mix."""
        if self.embedder == "e5" and self.e5_model is not None:
            from kefu.adapters.embedders import image_digest

            return self.data_dir / f"index-e5-tuned-{image_digest(self.e5_model)}.sqlite3"
        return self.data_dir / f"index-{self.embedder}.sqlite3"

    @property
    def sessions_path(self) -> Path:
        return self.data_dir / "sessions.sqlite3"

    @property
    def tickets_path(self) -> Path:
        return self.data_dir / "tickets.sqlite3"

    @property
    def queue_path(self) -> Path:
        return self.data_dir / "escalation-queue.sqlite3"

    @property
    def insights_path(self) -> Path:
        return self.data_dir / "insights.sqlite3"
