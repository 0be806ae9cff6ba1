"""The chat function may call the configured Bedrock models, and only those."""

from __future__ import annotations

from typing import Any

import pytest

from infra_cdk.constructs.bedrock_access import inference_profile_base_model
from tests.infra.synth import ACCOUNT, PARTITION, REGION, SynthesizedStage, joined

CHAT_ACTIONS = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]


def bedrock_statements(stage: SynthesizedStage) -> list[dict[str, Any]]:
    return [
        statement
        for statement in stage.role_statements(stage.chat_role_id())
        if all(action.startswith("bedrock:") for action in statement["Action"])
    ]


@pytest.mark.parametrize(
    ("model_id", "base_model"),
    [
        ("anthropic.claude-3-5-haiku-20241022-v1:0", None),
        ("amazon.titan-embed-text-v2:0", None),
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "anthropic.claude-3-5-haiku-20241022-v1:0"),
        (
            "eu.anthropic.claude-3-7-sonnet-20250219-v1:0",
            "anthropic.claude-3-7-sonnet-20250219-v1:0",
        ),
        (
            "global.anthropic.claude-haiku-4-5-20251001-v1:0",
            "anthropic.claude-haiku-4-5-20251001-v1:0",
        ),
    ],
)
def test_inference_profiles_are_told_apart_from_foundation_models(
    model_id: str, base_model: str | None
) -> None:
    assert inference_profile_base_model(model_id) == base_model


def test_a_foundation_model_is_granted_in_the_stack_region_only(dev: SynthesizedStage) -> None:
    model_id = dev.config.bedrock_model_id
    assert inference_profile_base_model(model_id) is None, "dev answers with a foundation model"
    model_arn = joined("arn:", PARTITION, ":bedrock:", REGION, f"::foundation-model/{model_id}")

    statements = bedrock_statements(dev)

    assert {"Action": CHAT_ACTIONS, "Effect": "Allow", "Resource": [model_arn]} in statements


def test_the_embedding_model_may_be_invoked_but_not_streamed(each_stage: SynthesizedStage) -> None:
    model_id = each_stage.config.bedrock_embedding_model_id
    model_arn = joined("arn:", PARTITION, ":bedrock:", REGION, f"::foundation-model/{model_id}")

    statements = bedrock_statements(each_stage)

    assert {"Action": ["bedrock:InvokeModel"], "Effect": "Allow", "Resource": [model_arn]} in (
        statements
    )


def test_an_inference_profile_opens_its_model_everywhere_but_only_through_the_profile(
    global_profile: SynthesizedStage,
) -> None:
    profile_id = global_profile.config.bedrock_model_id
    base_model = inference_profile_base_model(profile_id)
    profile_arn = joined(
        "arn:", PARTITION, ":bedrock:", REGION, ":", ACCOUNT, f":inference-profile/{profile_id}"
    )

    statements = bedrock_statements(global_profile)

    assert {"Action": CHAT_ACTIONS, "Effect": "Allow", "Resource": [profile_arn]} in statements
    assert {
        "Action": CHAT_ACTIONS,
        "Effect": "Allow",
        "Resource": [
            joined("arn:", PARTITION, f":bedrock:*::foundation-model/{base_model}"),
            # A global profile names the model with no region at all.
            joined("arn:", PARTITION, f":bedrock:::foundation-model/{base_model}"),
        ],
        "Condition": {"StringEquals": {"bedrock:InferenceProfileArn": profile_arn}},
    } in statements


def test_no_stage_may_call_any_other_model(each_stage: SynthesizedStage) -> None:
    allowed = {
        each_stage.config.bedrock_model_id,
        each_stage.config.bedrock_embedding_model_id,
        inference_profile_base_model(each_stage.config.bedrock_model_id),
    }
    statements = bedrock_statements(each_stage)

    assert statements
    for statement in statements:
        for resource in statement["Resource"]:
            tail = resource["Fn::Join"][1][-1]
            assert tail.rsplit("/", 1)[-1] in allowed, resource
