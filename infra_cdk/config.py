"""The typed stage config, read from the CDK context.

`cdk.json` holds one entry per stage under the `stages` context key; `-c stage=prod` picks one
(`dev` when not given). Every per-stage difference lives here and reaches the constructs as plain
parameters, so no construct ever asks which stage it is in.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from aws_cdk import aws_logs as logs
from constructs import Construct
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from infra_cdk.constructs.bedrock_access import inference_profile_base_model

STAGE_CONTEXT_KEY = "stage"
STAGES_CONTEXT_KEY = "stages"
DEFAULT_STAGE = "dev"

# The characters Secrets Manager allows in a secret's name (a name, not an ARN).
_SECRET_NAME_PATTERN = r"^[A-Za-z0-9/_+=.@-]{1,512}$"

# The retention periods CloudWatch Logs accepts, in days.
_RETENTION_BY_DAYS: dict[int, logs.RetentionDays] = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


class StageConfigError(ValueError):
    """The CDK context does not describe a usable stage."""


class StageConfig(BaseModel):
    """Everything that differs between two deployments of Kefu."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,19}$")
    # Both optional: without them the stack is environment-agnostic and synth needs no credentials.
    account: str | None = Field(default=None, pattern=r"^\d{12}$")
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    # "private" (isolated subnets, VPC endpoints, no egress) arrives in a later issue.
    profile: Literal["public", "private"] = "public"
    log_retention_days: int = 30
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    chat_memory_mb: int = Field(default=1024, ge=128, le=10240)
    # SnapStart on the chat function: each published version is initialised (imports and the
    # chat service built) once, and its environments start from that snapshot. Python 3.12
    # supports it in most commercial regions; turn it off where the region does not.
    chat_snap_start: bool = True
    # A REST API gives up on its integration after 29 s: a longer Lambda timeout buys nothing.
    chat_timeout_seconds: int = Field(default=29, ge=3, le=29)
    # A foundation model id, or a cross-region inference profile id such as "us.anthropic…".
    bedrock_model_id: str = Field(
        default="anthropic.claude-3-5-haiku-20241022-v1:0", pattern=r"^[a-z0-9-]+(\.[\w.:-]+)+$"
    )
    bedrock_embedding_model_id: str = Field(
        default="amazon.titan-embed-text-v2:0", pattern=r"^[a-z0-9-]+(\.[\w.:-]+)+$"
    )
    # What writes the answers: Claude on Bedrock (`bedrock_model_id`), Claude through Anthropic's
    # API (its key in the Secrets Manager secret named here), or quotes of the matched FAQ entry
    # or passage (`extractive`, no model at all).
    chat_model: Literal["bedrock", "anthropic", "extractive"] = "bedrock"
    # Unset: the model kefu defaults to (KEFU_ANTHROPIC_MODEL).
    anthropic_model: str | None = Field(default=None, pattern=r"^[a-z0-9][\w.:@-]*$")
    anthropic_api_key_secret_name: str | None = Field(default=None, pattern=_SECRET_NAME_PATTERN)
    # The enterprise's order API (`GET <url>/orders/<id>`, its key in the secret named here);
    # unset, the chat answers without order lookups.
    orders_url: str | None = None
    orders_api_key_secret_name: str | None = Field(default=None, pattern=_SECRET_NAME_PATTERN)
    # The conversation the chat keeps verbatim, in tokens; older turns fold into a summary.
    memory_tokens: int = Field(default=2048, ge=256, le=32768)
    # The fit an FAQ entry needs to answer (its similarity relative to how alike its questions
    # are), the similarity it needs where a tenant has no FAQ head (unset: the FAQ threshold),
    # the similarity a passage needs, and the FAQ head's probability an entry needs, for the
    # deployed embedder (Titan has no built-in values): measure them with `python -m
    # kb_ingest.evaluate --calibrate` (with `--no-head` for the similarity one). Unset, the
    # chat answers 503 not_configured rather than guess.
    faq_threshold: float | None = Field(default=None, ge=0, le=1)
    similarity_threshold: float | None = Field(default=None, ge=0, le=1)
    head_threshold: float | None = Field(default=None, ge=0, le=1)
    passage_threshold: float | None = Field(default=None, ge=0, le=1)
    api_throttling_rate_limit: float = Field(default=50, gt=0)
    api_throttling_burst_limit: int = Field(default=100, gt=0)
    api_key_required: bool = True
    # Origins a browser page may call the API from (the site that hosts the web chat), each
    # named as the browser sends it ("https://support.example.com"), or "*" for any. None by
    # default: no other site's page may call the API.
    cors_allow_origins: tuple[str, ...] = ()
    # Keep the sessions table, its key and the logs when the stack is deleted.
    retain_data: bool = False
    # API Gateway execution logging needs one CloudWatch role per account and region; turn this off
    # where the account already has one.
    api_gateway_cloudwatch_role: bool = True

    # The ingest function: one SQS batch of knowledge files (parse, embed, index) per invocation.
    ingest_memory_mb: int = Field(default=1024, ge=128, le=10240)
    # The ingest queue hides a message for six times this (AWS's advice for SQS event sources).
    ingest_timeout_seconds: int = Field(default=300, ge=30, le=900)

    # Hand-over to a human: after this many consecutive declined or unsure turns the chat opens
    # a ticket, which the escalation function completes and announces to the helpdesk (SNS,
    # and the enterprise's webhook when its Secrets Manager secret, {"url", "secret"}, is named).
    handover_after_failures: int = Field(default=2, ge=1, le=10)
    webhook_secret_name: str | None = Field(default=None, pattern=_SECRET_NAME_PATTERN)
    # The escalation queue hides a message for six times this; after this many deliveries a
    # hand-over goes to the dead-letter queue (and raises the alarm).
    # At least the escalation function's per-record budget (30 s, a webhook's worst case) and
    # a margin: with less, every hand-over would be handed back untried.
    escalation_timeout_seconds: int = Field(default=60, ge=45, le=900)
    escalation_max_receive_count: int = Field(default=3, ge=1, le=10)
    # How often the sweeper re-queues tickets stuck in `pending`.
    sweep_every_minutes: int = Field(default=5, ge=1, le=60)
    # When closed hand-overs are exported as training data, with the knowledge-gap report: an
    # EventBridge schedule expression (monthly by default: 03:00 UTC on the 1st).
    export_schedule: str = "cron(0 3 1 * ? *)"

    # The OpenSearch Service domain behind hybrid retrieval. The t2 and t3.small types cannot
    # encrypt at rest, which the domain always does.
    opensearch_instance_type: str = Field(
        default="t3.medium.search", pattern=r"^[a-z0-9]+\.[a-z0-9]+\.search$"
    )
    opensearch_instance_count: int = Field(default=1, ge=1, le=80)
    opensearch_volume_size_gb: int = Field(default=10, ge=10, le=16384)
    # 1 turns zone awareness off; 2 or 3 spread the data nodes (and their replicas) over AZs.
    opensearch_availability_zones: Literal[1, 2, 3] = 1
    # Dedicated cluster-manager nodes: 0 (the data nodes elect one), or 3 or 5.
    opensearch_dedicated_master_count: Literal[0, 3, 5] = 0
    opensearch_dedicated_master_type: str | None = Field(
        default=None, pattern=r"^[a-z0-9]+\.[a-z0-9]+\.search$"
    )

    # The VPC the chat, ingest and head-upgrade functions, the domain and the cache share: NAT
    # gateways (one is cheapest; one per AZ keeps egress up when an AZ is down).
    nat_gateways: int = Field(default=1, ge=1, le=3)
    # The VPC's AZs by name, where the region's first ones will not do (one without Lambda or
    # ElastiCache Serverless support): as many as the VPC spans, in the stage's `region`. Unset,
    # the region's first two or three (`Fn::GetAZs`), with no lookup at synth.
    availability_zones: tuple[str, ...] | None = None
    # The answer cache (ElastiCache Serverless, Valkey): its ceilings, which cap its bill.
    cache_max_data_gb: int = Field(default=1, ge=1, le=5000)
    cache_max_ecpu_per_second: int = Field(default=5000, ge=1000, le=15_000_000)

    @field_validator("log_retention_days")
    @classmethod
    def _known_retention(cls, days: int) -> int:
        if days not in _RETENTION_BY_DAYS:
            allowed = ", ".join(str(d) for d in _RETENTION_BY_DAYS)
            raise ValueError(f"CloudWatch Logs keeps logs for one of {allowed} days, not {days}")
        return days

    @field_validator("opensearch_instance_type")
    @classmethod
    def _encrypts_at_rest(cls, instance_type: str) -> str:
        if instance_type.startswith(("t2.", "t3.small.")):
            raise ValueError(
                f"{instance_type} cannot encrypt data at rest: pick t3.medium or larger"
            )
        return instance_type

    @field_validator("export_schedule")
    @classmethod
    def _schedule_expression(cls, expression: str) -> str:
        if not re.fullmatch(r"(cron|rate)\(\S.*\S\)", expression):
            raise ValueError(
                f"export_schedule must be an EventBridge schedule expression, 'cron(...)' or "
                f"'rate(...)', not {expression!r}"
            )
        return expression

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins_as_browsers_send_them(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        for origin in origins:
            # A browser's Origin header is a scheme, a host and perhaps a port, nothing more: an
            # origin with a path, a trailing slash or a wildcard in it would never match one.
            if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?", origin):
                raise ValueError(
                    f"cors_allow_origins: {origin!r} is not an origin; name each as "
                    "'https://host' (or 'https://host:port'), or '*' for any"
                )
        return origins

    @field_validator("orders_url")
    @classmethod
    def _orders_over_https(cls, url: str | None) -> str | None:
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme != "https" or not parts.hostname:
                raise ValueError(
                    f"orders_url must be an https:// URL (the order API key travels with each "
                    f"call), not {url!r}"
                )
            if parts.port not in (None, 443):
                raise ValueError(
                    f"orders_url must use port 443, not {parts.port}: the chat function's "
                    "security group lets it out on HTTPS's port only"
                )
        return url

    @model_validator(mode="after")
    def _private_data_stays_in_the_region(self) -> StageConfig:
        if self.profile != "private":
            return self
        if self.chat_model == "anthropic":
            raise ValueError(
                "the private profile keeps customer data in the stack's region: chat_model "
                "'anthropic' sends conversations to Anthropic's API outside AWS; use 'bedrock' "
                "with a foundation model id"
            )
        for field in ("bedrock_model_id", "bedrock_embedding_model_id"):
            model_id: str = getattr(self, field)
            base_model = inference_profile_base_model(model_id)
            if base_model is not None:
                raise ValueError(
                    f"the private profile keeps customer data in the stack's region: {field} "
                    f"{model_id!r} is a cross-region inference profile, which may route requests "
                    f"to other regions; use the foundation model {base_model!r} instead"
                )
        return self

    @model_validator(mode="after")
    def _chat_model_settings(self) -> StageConfig:
        anthropic_fields = ("anthropic_model", "anthropic_api_key_secret_name")
        if self.chat_model == "anthropic":
            if self.anthropic_api_key_secret_name is None:
                raise ValueError(
                    "chat_model 'anthropic' needs anthropic_api_key_secret_name: the name of the "
                    "Secrets Manager secret holding the Anthropic API key"
                )
        elif any(getattr(self, name) is not None for name in anthropic_fields):
            raise ValueError(
                f"{' and '.join(anthropic_fields)} only apply with chat_model 'anthropic', and "
                f"this stage answers with {self.chat_model!r}"
            )
        if (self.orders_url is None) != (self.orders_api_key_secret_name is None):
            raise ValueError(
                "orders_url and orders_api_key_secret_name go together: the order API and the "
                "Secrets Manager secret holding its key"
            )
        return self

    @model_validator(mode="after")
    def _opensearch_topology(self) -> StageConfig:
        zones = self.opensearch_availability_zones
        if self.opensearch_instance_count % zones:
            raise ValueError(
                f"opensearch_instance_count {self.opensearch_instance_count} does not spread "
                f"evenly over opensearch_availability_zones {zones}"
            )
        if (self.opensearch_dedicated_master_count > 0) != (
            self.opensearch_dedicated_master_type is not None
        ):
            raise ValueError(
                "opensearch_dedicated_master_count and opensearch_dedicated_master_type go together"
            )
        return self

    @model_validator(mode="after")
    def _nat_per_zone_at_most(self) -> StageConfig:
        if self.nat_gateways > self.vpc_availability_zones:
            raise ValueError(
                f"nat_gateways {self.nat_gateways} is more than the VPC's "
                f"{self.vpc_availability_zones} AZs (one per AZ at most)"
            )
        return self

    @model_validator(mode="after")
    def _named_zones_fit(self) -> StageConfig:
        zones = self.availability_zones
        if zones is None:
            return self
        if self.region is None:
            raise ValueError("availability_zones needs the stage's region: AZ names are regional")
        if len(zones) != self.vpc_availability_zones or len(set(zones)) != len(zones):
            raise ValueError(
                f"availability_zones names {len(zones)} AZs; the VPC spans "
                f"{self.vpc_availability_zones} distinct ones"
            )
        strays = [zone for zone in zones if not re.fullmatch(rf"{self.region}[a-z]", zone)]
        if strays:
            raise ValueError(f"availability_zones {strays} are not AZs of {self.region}")
        return self

    @property
    def vpc_availability_zones(self) -> int:
        """Two AZs (the cache needs subnets in two), or the domain's three."""
        return max(2, self.opensearch_availability_zones)

    @property
    def log_retention(self) -> logs.RetentionDays:
        return _RETENTION_BY_DAYS[self.log_retention_days]

    @property
    def stack_name(self) -> str:
        return f"KefuService-{self.name}"


def stage_config_from_context(scope: Construct) -> StageConfig:
    """Read the stage picked with `-c stage=<name>` from the `stages` context of `cdk.json`."""
    stage = scope.node.try_get_context(STAGE_CONTEXT_KEY) or DEFAULT_STAGE
    stages: Any = scope.node.try_get_context(STAGES_CONTEXT_KEY)
    if not isinstance(stages, dict) or not stages:
        raise StageConfigError(
            f"no '{STAGES_CONTEXT_KEY}' in the CDK context: run through the CDK CLI from the "
            "repository root (it reads cdk.json), or pass the context to the App"
        )
    if stage not in stages:
        known = ", ".join(sorted(stages))
        raise StageConfigError(f"unknown stage {stage!r}: cdk.json defines {known}")
    try:
        return StageConfig.model_validate({"name": stage, **stages[stage]})
    except ValidationError as exc:
        raise StageConfigError(f"stage {stage!r} in cdk.json is invalid:\n{exc}") from exc
