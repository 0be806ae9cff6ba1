"""Where conversations are remembered between turns."""

from __future__ import annotations

from aws_cdk import Acknowledgment, RemovalPolicy, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

SESSION_KEY_ATTRIBUTE = "session_id"
EXPIRY_ATTRIBUTE = "expires_at"


def expiring_table(
    scope: Construct,
    construct_id: str,
    *,
    key: str,
    expiry: str,
    encryption_key: kms.IKey,
    removal_policy: RemovalPolicy,
) -> dynamodb.Table:
    """An on-demand table keyed by the string attribute `key`, its items expired by DynamoDB TTL
    on `expiry`, encrypted with `encryption_key`, with point-in-time recovery: how every table
    of the stack is kept (sessions, ingest idempotency records)."""
    return dynamodb.Table(
        scope,
        construct_id,
        partition_key=dynamodb.Attribute(name=key, type=dynamodb.AttributeType.STRING),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        time_to_live_attribute=expiry,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
        encryption_key=encryption_key,
        removal_policy=removal_policy,
    )


class SessionStore(Construct):
    """The sessions table: one item per conversation, expired by DynamoDB TTL.

    Encrypted with its own customer-managed key, with point-in-time recovery.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, removal_policy: RemovalPolicy
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts Kefu's conversation sessions",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        self.table = expiring_table(
            self,
            "Table",
            key=SESSION_KEY_ATTRIBUTE,
            expiry=EXPIRY_ATTRIBUTE,
            encryption_key=self.key,
            removal_policy=removal_policy,
        )

    def grant_read_write(self, function: lambda_.IFunction) -> None:
        """Let `function` read and write sessions, and use the table's key to do so."""
        if function.role is None:
            raise ValueError("grant_read_write needs a function with an execution role")
        self.table.grant_read_write_data(function)
        # The grant's policy lands on the function's role: acknowledge its findings there only.
        for action in ("kms:ReEncrypt*", "kms:GenerateDataKey*"):
            Validations.of(function.role).acknowledge(
                Acknowledgment(
                    id=f"AwsSolutions-IAM5[Action::{action}]",
                    reason="Added by DynamoDB's grant on the sessions table and scoped to that "
                    "table's own customer-managed key; DynamoDB needs them to encrypt items.",
                )
            )
