"""Learning from hand-overs: the insights the chat records, and the monthly export.

    chat Lambda ─► insights table (turns, ratings)
    schedule (cron) ─► export Lambda ─► closed tickets + insights
        ─► training bucket: chat-format JSONL (training data) and the knowledge-gap report

The export only adds objects to the bucket; what answers customers never reads it.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra_cdk.constructs.escalation import acknowledge_key_wildcards, alarm_on_any, record_table
from infra_cdk.constructs.service_function import LogLevel, ServiceFunction

EXPORT_SERVICE_NAME = "kefu-export"
EXPORT_MEMORY_MB = 1024
EXPORT_TIMEOUT = Duration.minutes(5)
INSIGHTS_PARTITION_ATTRIBUTE = "period"
INSIGHTS_SORT_ATTRIBUTE = "key"
INSIGHTS_EXPIRY_ATTRIBUTE = "expires_at"
# Each export is a new object; a version only replaces another when an export is run again.
NONCURRENT_VERSION_EXPIRATION = Duration.days(90)


class Improvement(Construct):
    """The insights table, the training-data bucket, and the export function run on a schedule.

    The table and the bucket hold what customers wrote: both are encrypted with the
    improvement's own customer-managed key; the bucket is private, versioned, HTTPS-only and
    logged.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code_dir: Path,
        layer: lambda_.ILayerVersion,
        tickets_table: dynamodb.ITable,
        export_schedule: events.Schedule,
        alarm_topic: sns.ITopic,
        log_level: LogLevel,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts Kefu's insights and training-data exports",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        self.insights_table = record_table(
            self,
            "InsightsTable",
            partition_key=INSIGHTS_PARTITION_ATTRIBUTE,
            sort_key=INSIGHTS_SORT_ATTRIBUTE,
            expiry=INSIGHTS_EXPIRY_ATTRIBUTE,
            encryption_key=self.key,
            removal_policy=removal_policy,
        )
        self.bucket = self._bucket(removal_policy=removal_policy)

        export = ServiceFunction(
            self,
            "ExportFunction",
            service_name=EXPORT_SERVICE_NAME,
            description="Kefu export: closed hand-overs as training data, and knowledge gaps",
            code_dir=code_dir,
            handler="handler.lambda_handler",
            layers=[layer],
            environment={
                "KEFU_TICKETS": "dynamodb",
                "KEFU_TICKETS_TABLE": tickets_table.table_name,
                "KEFU_INSIGHTS": "dynamodb",
                "KEFU_INSIGHTS_TABLE": self.insights_table.table_name,
                "KEFU_EXPORT_BUCKET": self.bucket.bucket_name,
            },
            memory_mb=EXPORT_MEMORY_MB,
            timeout=EXPORT_TIMEOUT,
            log_level=log_level,
            log_retention=log_retention,
            removal_policy=removal_policy,
        )
        self.export_function = export.function
        tickets_table.grant_read_data(export.role)
        self.insights_table.grant_read_data(export.role)
        self._allow_writing_exports(export.role)
        self._acknowledge_tickets_read(export.role, tickets_table)
        self.export_rule = events.Rule(
            self,
            "ExportSchedule",
            description="Exports closed hand-overs as training data with the knowledge-gap report",
            schedule=export_schedule,
            targets=[targets.LambdaFunction(export.function)],
        )
        self.export_alarm = alarm_on_any(
            self,
            "ExportErrorsAlarm",
            description="The training-data export failed (the kefu-export function's log says "
            "why); it runs again at the next schedule, or invoke it by hand",
            metric=export.function.metric_errors(
                period=Duration.minutes(5), statistic=cloudwatch.Stats.SUM
            ),
            topic=alarm_topic,
        )

    @property
    def insights_environment(self) -> dict[str, str]:
        """What a function needs to record insights: the insights table."""
        return {"KEFU_INSIGHTS": "dynamodb", "KEFU_INSIGHTS_TABLE": self.insights_table.table_name}

    def grant_record(self, function: lambda_.IFunction) -> None:
        """Let `function` record turns and ratings in the insights table, and tell it where."""
        if function.role is None:
            raise ValueError("grant_record needs a function with an execution role")
        self.insights_table.grant_write_data(function)
        acknowledge_key_wildcards(
            function.role, granted_by="DynamoDB's grant on the insights table"
        )
        if isinstance(function, lambda_.Function):
            for name, value in self.insights_environment.items():
                function.add_environment(name, value)

    def _bucket(self, *, removal_policy: RemovalPolicy) -> s3.Bucket:
        # Server access logs may not go to an SSE-KMS bucket: their bucket uses S3-managed keys.
        access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            removal_policy=removal_policy,
        )
        return s3.Bucket(
            self,
            "TrainingBucket",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="training-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    noncurrent_version_expiration=NONCURRENT_VERSION_EXPIRATION,
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                ),
            ],
            removal_policy=removal_policy,
        )

    def _allow_writing_exports(self, role: iam.IRole) -> None:
        # Put only: an export never reads, lists or deletes what earlier ones wrote.
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"], resources=[self.bucket.arn_for_objects("*")]
            )
        )
        # A multipart upload (a large export) needs Decrypt as well as a data key.
        self.key.grant(role, "kms:GenerateDataKey", "kms:Decrypt")
        bucket = self.bucket.node.default_child
        assert isinstance(bucket, s3.CfnBucket)
        Validations.of(role).acknowledge(
            Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::<{Stack.of(self).get_logical_id(bucket)}.Arn>/*]",
                reason="The export function writes each month's training data and knowledge-gap "
                "report under a new key of the training bucket, and only of that bucket.",
            )
        )

    def _acknowledge_tickets_read(self, role: iam.IRole, tickets_table: dynamodb.ITable) -> None:
        table = tickets_table.node.default_child
        assert isinstance(table, dynamodb.CfnTable)
        Validations.of(role).acknowledge(
            Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::<{Stack.of(self).get_logical_id(table)}.Arn>"
                "/index/*]",
                reason="The export function finds the month's closed tickets through the "
                "tickets table's status index, and may read only that table's indexes.",
            )
        )
