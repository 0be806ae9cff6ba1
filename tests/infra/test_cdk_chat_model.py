"""What writes the chat's answers, and the outside services the chat function may reach."""

from __future__ import annotations

from typing import Any

from tests.infra.synth import ACCOUNT, PARTITION, REGION, SynthesizedStage, joined


def secret_arn(name: str | None) -> dict[str, Any]:
    assert name, "the stage names no secret"
    # A secret imported by name: its ARN ends in a random six-character suffix.
    return joined(
        "arn:", PARTITION, ":secretsmanager:", REGION, ":", ACCOUNT, f":secret:{name}-??????"
    )


def readable_secrets(stage: SynthesizedStage) -> list[Any]:
    """Every secret made outside the stack that the chat function's role may read (the
    stack's own, the answer cache user's, is tested with the cache)."""
    own = [
        {"Ref": logical_id}
        for logical_id in stage.template.find_resources("AWS::SecretsManager::Secret")
    ]
    return [
        resource
        for statement in stage.role_statements(stage.chat_role_id())
        if "secretsmanager:GetSecretValue" in statement["Action"]
        for resource in statement["Resource"]
        if resource not in own
    ]


def chat_model_grants(stage: SynthesizedStage) -> list[dict[str, Any]]:
    """The chat role's statements that let it call a Bedrock chat model (streaming included)."""
    return [
        statement
        for statement in stage.role_statements(stage.chat_role_id())
        if "bedrock:InvokeModelWithResponseStream" in statement["Action"]
    ]


def test_the_chat_function_answers_with_claude_on_bedrock_by_default(
    dev: SynthesizedStage,
) -> None:
    variables = dev.chat_variables()

    assert "chat_model" not in dev.config.model_fields_set, "dev should rely on the default"
    assert variables["KEFU_MODEL"] == "bedrock"
    assert variables["KEFU_BEDROCK_MODEL_ID"] == dev.config.bedrock_model_id
    assert variables["KEFU_MEMORY_TOKENS"] == "2048"
    assert chat_model_grants(dev), "the chat function may not call its Bedrock model"


def test_a_stage_without_outside_services_reads_no_secret_and_looks_no_order_up(
    each_stage: SynthesizedStage,
) -> None:
    variables = each_stage.chat_variables()

    assert not [name for name in variables if name.startswith(("KEFU_ANTHROPIC", "KEFU_ORDERS"))]
    assert readable_secrets(each_stage) == []


def test_an_anthropic_stage_reads_its_api_key_from_the_named_secret(
    anthropic_with_orders: SynthesizedStage,
) -> None:
    config = anthropic_with_orders.config
    variables = anthropic_with_orders.chat_variables()

    assert variables["KEFU_MODEL"] == "anthropic"
    assert variables["KEFU_ANTHROPIC_MODEL"] == config.anthropic_model
    assert variables["KEFU_ANTHROPIC_API_KEY_SECRET"] == config.anthropic_api_key_secret_name
    assert secret_arn(config.anthropic_api_key_secret_name) in readable_secrets(
        anthropic_with_orders
    )


def test_an_anthropic_stage_may_not_call_a_bedrock_chat_model_but_still_embeds_with_titan(
    anthropic_with_orders: SynthesizedStage,
) -> None:
    variables = anthropic_with_orders.chat_variables()
    embedding_model = anthropic_with_orders.config.bedrock_embedding_model_id
    embedding_grant = {
        "Action": ["bedrock:InvokeModel"],
        "Effect": "Allow",
        "Resource": [
            joined("arn:", PARTITION, ":bedrock:", REGION, f"::foundation-model/{embedding_model}")
        ],
    }

    assert "KEFU_BEDROCK_MODEL_ID" not in variables
    assert chat_model_grants(anthropic_with_orders) == []
    assert variables["KEFU_BEDROCK_EMBEDDING_MODEL_ID"] == embedding_model
    assert embedding_grant in anthropic_with_orders.role_statements(
        anthropic_with_orders.chat_role_id()
    )


def test_an_order_api_is_called_over_https_with_the_key_in_its_secret(
    anthropic_with_orders: SynthesizedStage,
) -> None:
    config = anthropic_with_orders.config
    variables = anthropic_with_orders.chat_variables()

    assert variables["KEFU_ORDERS"] == "https"
    assert variables["KEFU_ORDERS_URL"] == config.orders_url
    assert variables["KEFU_ORDERS_API_KEY_SECRET"] == config.orders_api_key_secret_name
    assert secret_arn(config.orders_api_key_secret_name) in readable_secrets(anthropic_with_orders)


def test_the_chat_function_may_read_those_two_secrets_and_no_other(
    anthropic_with_orders: SynthesizedStage,
) -> None:
    config = anthropic_with_orders.config
    expected = [
        secret_arn(config.anthropic_api_key_secret_name),
        secret_arn(config.orders_api_key_secret_name),
    ]

    readable = readable_secrets(anthropic_with_orders)

    assert len(readable) == len(expected)
    assert all(arn in readable for arn in expected)


def test_the_stage_sets_how_much_of_the_conversation_is_kept_verbatim(
    anthropic_with_orders: SynthesizedStage,
) -> None:
    variables = anthropic_with_orders.chat_variables()

    assert variables["KEFU_MEMORY_TOKENS"] == str(anthropic_with_orders.config.memory_tokens)
    assert anthropic_with_orders.config.memory_tokens != 2048, "the fixture should set its own"
