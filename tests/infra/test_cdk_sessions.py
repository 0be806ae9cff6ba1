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
    key_id = each_stage.table_key_id(each_stage.sessions_table_id())
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
    key = each_stage.resources[key_id]
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == retained


def test_the_chat_function_may_read_and_write_sessions_with_the_table_key(
    each_stage: SynthesizedStage,
) -> None:
    table_id = each_stage.sessions_table_id()
    table_arn = {"Fn::GetAtt": [table_id, "Arn"]}
    key_arn = {"Fn::GetAtt": [each_stage.table_key_id(table_id), "Arn"]}

    statements = each_stage.role_statements(each_stage.chat_role_id())

    assert any(
        {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}
        <= set(statement["Action"])
        and table_arn in statement["Resource"]
        and statement["Effect"] == "Allow"
        for statement in statements
    ), statements
    assert any(
        {"kms:Decrypt", "kms:Encrypt"} <= set(statement["Action"])
        and key_arn in statement["Resource"]
        for statement in statements
    ), statements
