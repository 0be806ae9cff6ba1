"""The stage config: what cdk.json may say, and how a mistake is reported."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import App

from infra_cdk.config import StageConfig, StageConfigError, stage_config_from_context
from infra_cdk.stacks.service_stack import KefuServiceStack
from tests.infra.synth import STAGE_NAMES, cdk_json_context


def config_for(context: dict[str, Any]) -> StageConfig:
    return stage_config_from_context(App(context=context))


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_every_stage_in_cdk_json_is_valid(name: str) -> None:
    config = config_for({**cdk_json_context(), "stage": name})

    assert config.name == name
    assert config.stack_name == f"KefuService-{name}"


def test_dev_is_the_stage_when_none_is_given() -> None:
    assert config_for(cdk_json_context()).name == "dev"


def test_the_stages_in_cdk_json_need_no_account_to_synthesize() -> None:
    for name in STAGE_NAMES:
        config = config_for({**cdk_json_context(), "stage": name})
        assert config.account is None, f"{name}: an account in cdk.json ties synth to it"


def test_an_unknown_stage_names_the_known_ones() -> None:
    with pytest.raises(StageConfigError, match=r"unknown stage 'qa': cdk\.json defines dev"):
        config_for({**cdk_json_context(), "stage": "qa"})


def test_without_stages_the_error_says_where_they_come_from() -> None:
    with pytest.raises(StageConfigError, match=r"cdk\.json"):
        config_for({})


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ({"log_retention_days": 31}, "CloudWatch Logs keeps logs for one of"),
        ({"chat_timeout_seconds": 60}, "chat_timeout_seconds"),
        ({"profile": "hybrid"}, "profile"),
        ({"account": "not-an-account"}, "account"),
        ({"bedrock_model_id": "claude"}, "bedrock_model_id"),
        ({"api_key_requried": False}, "api_key_requried"),  # a typo is an error, not a default
        ({"opensearch_instance_type": "t3.small.search"}, "cannot encrypt data at rest"),
        (
            {"opensearch_instance_count": 2, "opensearch_availability_zones": 3},
            "does not spread evenly",
        ),
        ({"opensearch_dedicated_master_count": 3}, "opensearch_dedicated_master_type"),
        ({"ingest_timeout_seconds": 901}, "ingest_timeout_seconds"),
        ({"chat_model": "claude"}, "chat_model"),
        ({"chat_model": "anthropic"}, "needs anthropic_api_key_secret_name"),
        ({"anthropic_model": "claude-sonnet-4-5"}, "only apply with chat_model 'anthropic'"),
        (
            {"chat_model": "anthropic", "anthropic_api_key_secret_name": "arn:aws:secretsmanager"},
            "anthropic_api_key_secret_name",
        ),
        (
            {"orders_url": "http://orders.example.com", "orders_api_key_secret_name": "k"},
            "must be an https:// URL",
        ),
        ({"orders_url": "https://orders.example.com"}, "orders_api_key_secret_name go together"),
        (
            {"orders_url": "https://orders.example.com:8443", "orders_api_key_secret_name": "k"},
            "must use port 443",
        ),
        ({"orders_api_key_secret_name": "kefu/orders"}, "orders_url and"),
        ({"memory_tokens": 255}, "memory_tokens"),
        ({"memory_tokens": 32769}, "memory_tokens"),
        ({"nat_gateways": 3}, "more than the VPC's 2 AZs"),
        ({"availability_zones": ["us-east-1a", "us-east-1b"]}, "needs the stage's region"),
        (
            {"region": "us-east-1", "availability_zones": ["us-east-1a"]},
            "the VPC spans 2 distinct ones",
        ),
        (
            {"region": "us-east-1", "availability_zones": ["us-east-1a", "eu-west-1b"]},
            "not AZs of us-east-1",
        ),
        ({"nat_gateways": 0}, "nat_gateways"),
        ({"cache_max_data_gb": 0}, "cache_max_data_gb"),
        ({"cache_max_ecpu_per_second": 999}, "cache_max_ecpu_per_second"),
        ({"cors_allow_origins": ["https://support.example.com/"]}, "is not an origin"),
        ({"cors_allow_origins": ["support.example.com"]}, "is not an origin"),
        ({"cors_allow_origins": ["https://*.example.com"]}, "is not an origin"),
    ],
)
def test_a_bad_stage_is_refused_with_the_field_named(
    override: dict[str, Any], complaint: str
) -> None:
    context = cdk_json_context()
    context["stages"]["dev"] = {**context["stages"]["dev"], **override}

    with pytest.raises(StageConfigError, match=complaint):
        config_for(context)


def test_a_stage_with_account_and_region_gets_an_explicit_environment() -> None:
    config = StageConfig(name="pinned", account="123456789012", region="eu-central-1")
    stack = KefuServiceStack(App(), config.stack_name, config=config)

    assert (stack.account, stack.region) == ("123456789012", "eu-central-1")


def stage_with(**overrides: Any) -> StageConfig:
    return StageConfig.model_validate({"name": "qa", **overrides})


def test_a_stage_answers_with_claude_on_bedrock_unless_told_otherwise() -> None:
    config = stage_with()

    assert config.chat_model == "bedrock"
    assert (config.orders_url, config.memory_tokens) == (None, 2048)


def test_a_stage_allows_no_cross_origin_calls_unless_it_names_the_origins() -> None:
    assert stage_with().cors_allow_origins == ()
    named = stage_with(cors_allow_origins=["https://support.example.com", "http://localhost:8080"])
    assert named.cors_allow_origins == ("https://support.example.com", "http://localhost:8080")


def test_an_anthropic_stage_names_the_secret_holding_its_key() -> None:
    config = stage_with(
        chat_model="anthropic",
        anthropic_api_key_secret_name="kefu/qa/anthropic-api-key",
        orders_url="https://orders.example.com/api",
        orders_api_key_secret_name="kefu/qa/orders-api-key",
    )

    assert config.anthropic_model is None, "unset, kefu's default model answers"


def test_the_private_profile_answers_with_in_region_foundation_models() -> None:
    config = stage_with(profile="private", chat_model="bedrock")

    assert config.bedrock_model_id == "anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        (
            {"chat_model": "anthropic", "anthropic_api_key_secret_name": "kefu/anthropic"},
            "chat_model 'anthropic' sends conversations to Anthropic's API outside AWS",
        ),
        (
            {"bedrock_model_id": "us.anthropic.claude-3-5-haiku-20241022-v1:0"},
            "bedrock_model_id 'us.anthropic.claude-3-5-haiku-20241022-v1:0' is a cross-region "
            "inference profile",
        ),
        (
            {"bedrock_model_id": "eu.anthropic.claude-3-7-sonnet-20250219-v1:0"},
            "use the foundation model 'anthropic.claude-3-7-sonnet-20250219-v1:0'",
        ),
        (
            {"bedrock_model_id": "apac.anthropic.claude-3-5-sonnet-20241022-v2:0"},
            "cross-region inference profile",
        ),
        (
            {"bedrock_model_id": "global.anthropic.claude-haiku-4-5-20251001-v1:0"},
            "cross-region inference profile",
        ),
        (
            {"bedrock_embedding_model_id": "us.amazon.titan-embed-text-v2:0"},
            "bedrock_embedding_model_id 'us.amazon.titan-embed-text-v2:0' is a cross-region",
        ),
    ],
)
def test_the_private_profile_refuses_what_would_take_data_out_of_the_region(
    override: dict[str, Any], complaint: str
) -> None:
    context = cdk_json_context()
    context["stages"]["dev"] = {**context["stages"]["dev"], "profile": "private", **override}

    with pytest.raises(StageConfigError, match="private profile keeps customer data") as refused:
        config_for(context)

    assert complaint in str(refused.value)


def test_the_public_profile_may_use_anthropic_and_cross_region_profiles() -> None:
    config = stage_with(
        profile="public",
        chat_model="anthropic",
        anthropic_api_key_secret_name="kefu/anthropic",
        bedrock_embedding_model_id="us.amazon.titan-embed-text-v2:0",
    )

    assert config.chat_model == "anthropic"
