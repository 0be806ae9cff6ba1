"""The Kefu service in one account and region."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, Environment, Fn, RemovalPolicy, Stack, Tags
from aws_cdk import aws_events as events
from constructs import Construct

from infra_cdk.assets import (
    CHAT_FUNCTION_DIR,
    ESCALATION_FUNCTION_DIR,
    EXPORT_FUNCTION_DIR,
    INGEST_FUNCTION_DIR,
    SHARED_LAYER_DIR,
)
from infra_cdk.config import StageConfig
from infra_cdk.constructs.answer_cache import AnswerCache
from infra_cdk.constructs.chat_api import AnthropicApi, ChatApi, OrderApi
from infra_cdk.constructs.escalation import Escalation
from infra_cdk.constructs.improvement import Improvement
from infra_cdk.constructs.knowledge_base import KnowledgeBase
from infra_cdk.constructs.network import Network
from infra_cdk.constructs.session_store import SessionStore
from infra_cdk.constructs.shared_layer import SharedLayer


class KefuServiceStack(Stack):
    """The chat API, its function and the sessions it keeps, the knowledge base it answers from
    (bucket, ingest pipeline, OpenSearch index), the answer cache, the VPC the index and the cache
    live in, the hand-over to the helpdesk (tickets, queue, notifications) and the monthly export
    of what hand-overs teach, for one stage."""

    # The stage's named AZs, or up to three of the region's whatever the account: the VPC is
    # built on `Fn::GetAZs` tokens even when the stage names its account and region, so synthesis
    # never looks AZs up (Stack's default gives an environment-agnostic stack two, and looks them
    # up for an environment).
    @property
    def availability_zones(self) -> list[str]:
        named: tuple[str, ...] | None = getattr(self, "_named_zones", None)
        if named:
            return list(named)
        return [Fn.select(index, Fn.get_azs()) for index in range(3)]

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, **kwargs: Any
    ) -> None:
        env = None
        if config.account or config.region:
            env = Environment(account=config.account, region=config.region)
        super().__init__(
            scope,
            construct_id,
            env=env,
            description=f"Kefu AI customer service ({config.name}, {config.profile} profile)",
            termination_protection=config.retain_data,
            **kwargs,
        )
        self._named_zones = config.availability_zones
        Tags.of(self).add("kefu:stage", config.name)
        removal_policy = RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY

        layer = SharedLayer(self, "SharedLayer", layer_dir=SHARED_LAYER_DIR)
        network = Network(
            self,
            "Network",
            zones=config.vpc_availability_zones,
            nat_gateways=config.nat_gateways,
            log_retention=config.log_retention,
            removal_policy=removal_policy,
        )
        chat_placement = network.placement(
            "ChatSecurityGroup", description="Kefu chat function: out on HTTPS and to its cache"
        )
        sessions = SessionStore(self, "Sessions", removal_policy=removal_policy)
        chat = ChatApi(
            self,
            "ChatApi",
            stage_name=config.name,
            code_dir=CHAT_FUNCTION_DIR,
            layer=layer.layer,
            sessions_table=sessions.table,
            chat_model=config.chat_model,
            bedrock_model_id=config.bedrock_model_id,
            bedrock_embedding_model_id=config.bedrock_embedding_model_id,
            anthropic=(
                AnthropicApi(
                    api_key_secret_name=config.anthropic_api_key_secret_name,
                    model=config.anthropic_model,
                )
                if config.anthropic_api_key_secret_name is not None
                else None
            ),
            orders=(
                OrderApi(
                    url=config.orders_url, api_key_secret_name=config.orders_api_key_secret_name
                )
                if config.orders_url is not None and config.orders_api_key_secret_name is not None
                else None
            ),
            memory_tokens=config.memory_tokens,
            handover_after_failures=config.handover_after_failures,
            thresholds={
                name: value
                for name, value in (
                    ("faq_threshold", config.faq_threshold),
                    ("similarity_threshold", config.similarity_threshold),
                    ("head_threshold", config.head_threshold),
                    ("passage_threshold", config.passage_threshold),
                )
                if value is not None
            },
            memory_mb=config.chat_memory_mb,
            snap_start=config.chat_snap_start,
            timeout=Duration.seconds(config.chat_timeout_seconds),
            log_level=config.log_level,
            log_retention=config.log_retention,
            removal_policy=removal_policy,
            throttling_rate_limit=config.api_throttling_rate_limit,
            throttling_burst_limit=config.api_throttling_burst_limit,
            api_key_required=config.api_key_required,
            cors_allow_origins=config.cors_allow_origins,
            create_cloudwatch_role=config.api_gateway_cloudwatch_role,
            placement=chat_placement,
        )
        sessions.grant_read_write(chat.function)
        answer_cache = AnswerCache(
            self,
            "AnswerCache",
            stage_name=config.name,
            network=network,
            max_data_gb=config.cache_max_data_gb,
            max_ecpu_per_second=config.cache_max_ecpu_per_second,
            removal_policy=removal_policy,
        )
        answer_cache.grant_connect(chat.function, chat_placement)

        escalation = Escalation(
            self,
            "Escalation",
            code_dir=ESCALATION_FUNCTION_DIR,
            layer=layer.layer,
            sessions_table=sessions.table,
            webhook_secret_name=config.webhook_secret_name,
            timeout=Duration.seconds(config.escalation_timeout_seconds),
            max_receive_count=config.escalation_max_receive_count,
            sweep_every=Duration.minutes(config.sweep_every_minutes),
            log_level=config.log_level,
            log_retention=config.log_retention,
            removal_policy=removal_policy,
        )
        escalation.grant_handover(chat.function)

        improvement = Improvement(
            self,
            "Improvement",
            code_dir=EXPORT_FUNCTION_DIR,
            layer=layer.layer,
            tickets_table=escalation.tickets_table,
            export_schedule=events.Schedule.expression(config.export_schedule),
            alarm_topic=escalation.alarm_topic,
            log_level=config.log_level,
            log_retention=config.log_retention,
            removal_policy=removal_policy,
        )
        improvement.grant_record(chat.function)

        knowledge = KnowledgeBase(
            self,
            "KnowledgeBase",
            stage_name=config.name,
            code_dir=INGEST_FUNCTION_DIR,
            layer=layer.layer,
            bedrock_embedding_model_id=config.bedrock_embedding_model_id,
            memory_mb=config.ingest_memory_mb,
            timeout=Duration.seconds(config.ingest_timeout_seconds),
            log_level=config.log_level,
            log_retention=config.log_retention,
            removal_policy=removal_policy,
            opensearch_instance_type=config.opensearch_instance_type,
            opensearch_instance_count=config.opensearch_instance_count,
            opensearch_volume_size_gb=config.opensearch_volume_size_gb,
            opensearch_availability_zones=config.opensearch_availability_zones,
            opensearch_dedicated_master_count=config.opensearch_dedicated_master_count,
            opensearch_dedicated_master_type=config.opensearch_dedicated_master_type,
            network=network,
        )
        knowledge.grant_search(chat.function, chat_placement)

        CfnOutput(self, "ApiUrl", value=chat.api.url, description="Base URL of the chat API")
        CfnOutput(
            self,
            "KnowledgeBucketName",
            value=knowledge.bucket.bucket_name,
            description="Upload knowledge files here (tenants/<tenant>/... for one tenant)",
        )
        CfnOutput(
            self,
            "AgentPolicyArn",
            value=chat.agent_policy.managed_policy_arn,
            description="Attach to the helpdesk agents' IAM role or group: the ticket routes",
        )
        CfnOutput(
            self,
            "HelpdeskTopicArn",
            value=escalation.notify_topic.topic_arn,
            description="Subscribe the helpdesk here: one message per hand-over ticket",
        )
        CfnOutput(
            self,
            "EscalationQueueUrl",
            value=escalation.queue.queue_url,
            description="Hand-overs waiting for the escalation function",
        )
        CfnOutput(
            self,
            "AlarmTopicArn",
            value=escalation.alarm_topic.topic_arn,
            description="Subscribe operations here: hand-overs failing or waiting, exports failing",
        )
        CfnOutput(
            self,
            "TrainingBucketName",
            value=improvement.bucket.bucket_name,
            description="Monthly exports of closed hand-overs (JSONL) and knowledge-gap reports",
        )
        if chat.api_key is not None:
            CfnOutput(
                self,
                "ApiKeyId",
                value=chat.api_key.key_id,
                description="aws apigateway get-api-key --include-value --api-key <this id>",
            )
