"""IAM statements that let a function call one Bedrock model, and nothing else.

A model id is either a foundation model (`anthropic.claude-…`) or a cross-region inference
profile (`us.anthropic.claude-…`, `global.…`). A profile needs the profile itself plus the
underlying foundation model in every region it may route to; the foundation-model statement is
then limited to calls made through that profile.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack, Token
from aws_cdk import aws_iam as iam
from constructs import Construct

# The geography prefixes of Bedrock's system-defined cross-region inference profiles.
_INFERENCE_PROFILE_PREFIXES = frozenset({"us", "us-gov", "eu", "apac", "jp", "au", "ca", "global"})

# Converse is authorized by InvokeModel, ConverseStream by InvokeModelWithResponseStream.
CHAT_MODEL_ACTIONS = ("bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream")
EMBEDDING_MODEL_ACTIONS = ("bedrock:InvokeModel",)


def inference_profile_base_model(model_id: str) -> str | None:
    """The foundation model behind a cross-region inference profile id, or None for a model id."""
    prefix, _, rest = model_id.partition(".")
    return rest if prefix in _INFERENCE_PROFILE_PREFIXES and rest else None


def _foundation_model_arn(stack: Stack, model_id: str, *, region: str | None) -> str:
    return stack.format_arn(
        service="bedrock",
        region=region,
        account="",
        resource="foundation-model",
        resource_name=model_id,
        arn_format=ArnFormat.SLASH_RESOURCE_NAME,
    )


def model_invoke_statements(
    scope: Construct, *, model_id: str, actions: tuple[str, ...]
) -> list[iam.PolicyStatement]:
    stack = Stack.of(scope)
    base_model = inference_profile_base_model(model_id)
    if base_model is None:
        return [
            iam.PolicyStatement(
                actions=list(actions),
                resources=[_foundation_model_arn(stack, model_id, region=None)],
            )
        ]
    profile_arn = stack.format_arn(
        service="bedrock",
        resource="inference-profile",
        resource_name=model_id,
        arn_format=ArnFormat.SLASH_RESOURCE_NAME,
    )
    # A global profile's requests name the model without a region.
    model_regions = ["*", ""] if model_id.startswith("global.") else ["*"]
    return [
        iam.PolicyStatement(actions=list(actions), resources=[profile_arn]),
        iam.PolicyStatement(
            actions=list(actions),
            resources=[
                _foundation_model_arn(stack, base_model, region=region) for region in model_regions
            ],
            conditions={"StringEquals": {"bedrock:InferenceProfileArn": profile_arn}},
        ),
    ]


def cross_region_model_findings(scope: Construct, *, model_id: str) -> list[str]:
    """The cdk-nag IAM5 findings raised by the any-region foundation-model resource of a profile."""
    base_model = inference_profile_base_model(model_id)
    if base_model is None:
        return []
    partition = Stack.of(scope).partition
    rendered = "<AWS::Partition>" if Token.is_unresolved(partition) else partition
    return [f"AwsSolutions-IAM5[Resource::arn:{rendered}:bedrock:*::foundation-model/{base_model}]"]
