"""The sessions table: what a conversation is keyed by, how long it lives, how it is protected."""

from __future__ import annotations

from aws_cdk.assertions import Match

from tests.infra.synth import SynthesizedStage


def test_sessions_are_keyed_by_session_id_and_expire_by_ttl(each_stage: SynthesizedStage) -> None:
    each_stage.template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [{"AttributeName": "session_id", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "session_id", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
            "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
        },
    )


def test_sessions_are_recoverable_and_encrypted_with_their_own_rotating_key(
    each_stage: SynthesizedStage,
) -> None:
    key_id = each_stage.only_logical_id("AWS::KMS::Key")
    retained = "Retain" if each_stage.config.retain_data else "Delete"

    each_stage.template.has_resource(
        "AWS::DynamoDB::Table",
        {
            "Properties": Match.object_like(
                {
                    "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                    "SSESpecification": {
                        "SSEEnabled": True,
                        "SSEType": "KMS",
                        "KMSMasterKeyId": {"Fn::GetAtt": [key_id, "Arn"]},
                    },
                }
            ),
            "DeletionPolicy": retained,
        },
    )
    each_stage.template.has_resource(
        "AWS::KMS::Key",
        {"Properties": Match.object_like({"EnableKeyRotation": True}), "DeletionPolicy": retained},
    )


def test_the_chat_function_may_read_and_write_sessions_with_the_table_key(
    each_stage: SynthesizedStage,
) -> None:
    function = each_stage.resources[each_stage.chat_function_id()]["Properties"]
    role_id = function["Role"]["Fn::GetAtt"][0]
    table_id = each_stage.only_logical_id("AWS::DynamoDB::Table")
    key_id = each_stage.only_logical_id("AWS::KMS::Key")

    each_stage.template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "Roles": [{"Ref": role_id}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Allow",
                                "Action": Match.array_with(
                                    ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
                                ),
                                "Resource": Match.array_with([{"Fn::GetAtt": [table_id, "Arn"]}]),
                            }
                        ),
                        Match.object_like(
                            {
                                "Effect": "Allow",
                                "Action": Match.array_with(["kms:Decrypt", "kms:Encrypt"]),
                                "Resource": {"Fn::GetAtt": [key_id, "Arn"]},
                            }
                        ),
                    ]
                )
            },
        },
    )
