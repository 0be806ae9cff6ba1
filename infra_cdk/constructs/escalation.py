"""Hand-over to a human: the tickets, the queue that completes them, and the helpdesk's topic.

    chat Lambda ─► tickets table (pending) + escalation queue ─► escalation Lambda
        ─► ticket completed (transcript from the session) ─► SNS helpdesk topic / webhook
    schedule (rate) ─► sweeper Lambda ─► tickets still pending ─► escalation queue again

A hand-over that keeps failing lands in the dead-letter queue; that, and a queue whose oldest
message waits longer than one delivery may take, raise alarms on the alarm topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra_cdk.constructs.service_function import LogLevel, ServiceFunction
from infra_cdk.constructs.session_store import expiring_table

ESCALATION_SERVICE_NAME = "kefu-escalation"
SWEEPER_SERVICE_NAME = "kefu-sweeper"
ESCALATION_MEMORY_MB = 512
SWEEPER_TIMEOUT = Duration.minutes(1)

TICKET_KEY_ATTRIBUTE = "ticket_id"
TICKETS_BY_STATUS_INDEX = "by-status"
TICKETS_BY_SESSION_INDEX = "by-session"
TICKET_STATUS_ATTRIBUTE = "status"
TICKET_SESSION_ATTRIBUTE = "session_id"
TICKET_CREATED_ATTRIBUTE = "created_at"
# Powertools' DynamoDBPersistenceLayer defaults: partition key `id`, expiry `expiration`.
IDEMPOTENCY_KEY_ATTRIBUTE = "id"
IDEMPOTENCY_EXPIRY_ATTRIBUTE = "expiration"

# AWS's advice for an SQS event source: hide a message for six times the function's timeout.
VISIBILITY_TIMEOUT_FACTOR = 6
QUEUE_RETENTION = Duration.days(4)
DEAD_LETTER_RETENTION = Duration.days(14)
ESCALATION_BATCH_SIZE = 10
# A customer waits for a human: gather a batch for a moment at most.
ESCALATION_BATCHING_WINDOW = Duration.seconds(1)


def record_table(
    scope: Construct,
    construct_id: str,
    *,
    partition_key: str,
    sort_key: str | None = None,
    expiry: str | None = None,
    encryption_key: kms.IKey,
    removal_policy: RemovalPolicy,
) -> dynamodb.Table:
    """An on-demand table of string-keyed records, encrypted with `encryption_key`, with
    point-in-time recovery, as `expiring_table` keeps every table of the stack; here with an
    optional sort key, and expired by DynamoDB TTL on `expiry` only when given (tickets are
    records of what customers were promised and are never expired)."""
    return dynamodb.Table(
        scope,
        construct_id,
        partition_key=dynamodb.Attribute(name=partition_key, type=dynamodb.AttributeType.STRING),
        sort_key=(
            dynamodb.Attribute(name=sort_key, type=dynamodb.AttributeType.STRING)
            if sort_key is not None
            else None
        ),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        time_to_live_attribute=expiry,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
        encryption_key=encryption_key,
        removal_policy=removal_policy,
    )


def alarm_on_any(
    scope: Construct,
    construct_id: str,
    *,
    description: str,
    metric: cloudwatch.Metric,
    topic: sns.ITopic,
    threshold: float = 0,
) -> cloudwatch.Alarm:
    """An alarm, announced on `topic`, as soon as `metric` is above `threshold` in one period
    (no data: no alarm); `KnowledgeBase._alarm_on_any` with an action."""
    alarm = metric.create_alarm(
        scope,
        construct_id,
        alarm_description=description,
        threshold=threshold,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=1,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
    action = cloudwatch_actions.SnsAction(topic)
    alarm.add_alarm_action(action)
    alarm.add_ok_action(action)
    return alarm


def acknowledge_key_wildcards(role: iam.IRole, *, granted_by: str) -> None:
    """The two wildcard KMS actions CDK's grants on an encrypted table or queue add."""
    for action in ("kms:ReEncrypt*", "kms:GenerateDataKey*"):
        Validations.of(role).acknowledge(
            Acknowledgment(
                id=f"AwsSolutions-IAM5[Action::{action}]",
                reason=f"Added by {granted_by} and scoped to their own customer-managed key; "
                "DynamoDB and SQS need them to encrypt what they store.",
            )
        )


class Escalation(Construct):
    """The tickets table, the escalation queue with its dead-letter queue and alarms, the
    helpdesk topic, the escalation function (with its idempotency table) and the sweeper.

    Tickets, queues, the idempotency records and the helpdesk topic are encrypted with the
    escalation's own customer-managed key; the alarm topic with a key of its own, which
    CloudWatch may use to publish.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code_dir: Path,
        layer: lambda_.ILayerVersion,
        sessions_table: dynamodb.ITable,
        webhook_secret_name: str | None,
        timeout: Duration,
        max_receive_count: int,
        sweep_every: Duration,
        log_level: LogLevel,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts Kefu's hand-over tickets, queues and helpdesk notifications",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        self.alarm_topic = self._alarm_topic(removal_policy=removal_policy)

        self.tickets_table = record_table(
            self,
            "TicketsTable",
            partition_key=TICKET_KEY_ATTRIBUTE,
            encryption_key=self.key,
            removal_policy=removal_policy,
        )
        for index_name, partition_key in (
            (TICKETS_BY_STATUS_INDEX, TICKET_STATUS_ATTRIBUTE),
            (TICKETS_BY_SESSION_INDEX, TICKET_SESSION_ATTRIBUTE),
        ):
            self.tickets_table.add_global_secondary_index(
                index_name=index_name,
                partition_key=dynamodb.Attribute(
                    name=partition_key, type=dynamodb.AttributeType.STRING
                ),
                sort_key=dynamodb.Attribute(
                    name=TICKET_CREATED_ATTRIBUTE, type=dynamodb.AttributeType.STRING
                ),
                projection_type=dynamodb.ProjectionType.ALL,
            )

        visibility_timeout = Duration.seconds(timeout.to_seconds() * VISIBILITY_TIMEOUT_FACTOR)
        self.dead_letter_queue = sqs.Queue(
            self,
            "EscalationDeadLetterQueue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            retention_period=DEAD_LETTER_RETENTION,
            removal_policy=removal_policy,
        )
        self.queue = sqs.Queue(
            self,
            "EscalationQueue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            visibility_timeout=visibility_timeout,
            retention_period=QUEUE_RETENTION,
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=max_receive_count, queue=self.dead_letter_queue
            ),
            removal_policy=removal_policy,
        )
        self.dead_letter_alarm = alarm_on_any(
            self,
            "EscalationDeadLetterAlarm",
            description=f"Hand-overs failed {max_receive_count} times and wait in the escalation "
            "dead-letter queue: customers asked for a human and the helpdesk was not told",
            metric=self.dead_letter_queue.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(1), statistic=cloudwatch.Stats.MAXIMUM
            ),
            topic=self.alarm_topic,
        )
        # Longer than one delivery may take: the function is failing, throttled or not consuming.
        self.queue_age_alarm = alarm_on_any(
            self,
            "EscalationQueueAgeAlarm",
            description="A hand-over has waited in the escalation queue longer than one "
            "delivery may take: customers are waiting for a human",
            metric=self.queue.metric_approximate_age_of_oldest_message(
                period=Duration.minutes(1), statistic=cloudwatch.Stats.MAXIMUM
            ),
            topic=self.alarm_topic,
            threshold=visibility_timeout.to_seconds(),
        )

        self.notify_topic = sns.Topic(
            self,
            "HelpdeskTopic",
            display_name="Kefu hand-overs",
            master_key=self.key,
            enforce_ssl=True,
        )
        self.idempotency_table = expiring_table(
            self,
            "IdempotencyTable",
            key=IDEMPOTENCY_KEY_ATTRIBUTE,
            expiry=IDEMPOTENCY_EXPIRY_ATTRIBUTE,
            encryption_key=self.key,
            removal_policy=removal_policy,
        )
        # A pending ticket is stuck once it is older than one delivery may take.
        self.sweep_after = visibility_timeout

        def escalation_function(
            construct_id: str,
            *,
            service_name: str,
            description: str,
            handler: str,
            environment: Mapping[str, str],
            function_timeout: Duration,
        ) -> ServiceFunction:
            """A function of the escalation asset (uploaded once for both). Both build the
            hand-over desk, which names the tickets, the queue and the sessions (each is granted
            only what it uses of them); neither records insights (`KEFU_INSIGHTS=none`)."""
            return ServiceFunction(
                self,
                construct_id,
                service_name=service_name,
                description=description,
                code_dir=code_dir,
                handler=handler,
                layers=[layer],
                environment={
                    **self.handover_environment,
                    "KEFU_SESSIONS": "dynamodb",
                    "KEFU_SESSIONS_TABLE": sessions_table.table_name,
                    "KEFU_INSIGHTS": "none",
                    **environment,
                },
                memory_mb=ESCALATION_MEMORY_MB,
                timeout=function_timeout,
                log_level=log_level,
                log_retention=log_retention,
                removal_policy=removal_policy,
            )

        escalation = escalation_function(
            "EscalationFunction",
            service_name=ESCALATION_SERVICE_NAME,
            description="Kefu escalation: completes hand-over tickets and tells the helpdesk",
            handler="handler.lambda_handler",
            environment={
                "KEFU_IDEMPOTENCY_TABLE": self.idempotency_table.table_name,
                "KEFU_NOTIFY_TOPIC_ARN": self.notify_topic.topic_arn,
                **(
                    {"KEFU_WEBHOOK_SECRET_NAME": webhook_secret_name}
                    if webhook_secret_name is not None
                    else {}
                ),
            },
            function_timeout=timeout,
        )
        self.function = escalation.function
        escalation.function.add_event_source(
            event_sources.SqsEventSource(
                self.queue,
                batch_size=ESCALATION_BATCH_SIZE,
                max_batching_window=ESCALATION_BATCHING_WINDOW,
                report_batch_item_failures=True,
            )
        )
        # Completing a ticket reads its session; it never queues (the sweeper does).
        self.tickets_table.grant_read_write_data(escalation.role)
        sessions_table.grant_read_data(escalation.role)
        self.idempotency_table.grant_read_write_data(escalation.role)
        self.notify_topic.grant_publish(escalation.role)
        # Publishing to an encrypted topic needs its key, which grant_publish does not give.
        self.key.grant(escalation.role, "kms:GenerateDataKey", "kms:Decrypt")
        if webhook_secret_name is not None:
            # Imported by name: the secret is the enterprise's, created and rotated outside.
            secretsmanager.Secret.from_secret_name_v2(
                self, "WebhookSecret", webhook_secret_name
            ).grant_read(escalation.role)
        self._acknowledge_tickets_grant(escalation.role, function="escalation")
        acknowledge_key_wildcards(
            escalation.role,
            granted_by="DynamoDB's grants on the tickets and idempotency tables",
        )

        sweeper = escalation_function(
            "SweeperFunction",
            service_name=SWEEPER_SERVICE_NAME,
            description="Kefu sweeper: queues again the hand-over tickets stuck in pending",
            handler="handler.sweep",
            environment={
                "KEFU_SWEEP_AFTER_SECONDS": str(int(self.sweep_after.to_seconds())),
            },
            function_timeout=SWEEPER_TIMEOUT,
        )
        self.sweeper_function = sweeper.function
        # Sweeping reads no session: tickets and the queue only.
        self.tickets_table.grant_read_write_data(sweeper.role)
        self.queue.grant_send_messages(sweeper.role)
        self._acknowledge_tickets_grant(sweeper.role, function="sweeper")
        acknowledge_key_wildcards(
            sweeper.role, granted_by="the grants on the tickets table and the escalation queue"
        )
        self.sweep_rule = events.Rule(
            self,
            "SweepSchedule",
            description="Queues again the hand-over tickets stuck in pending",
            schedule=events.Schedule.rate(sweep_every),
            targets=[targets.LambdaFunction(sweeper.function)],
        )
        self.sweeper_alarm = alarm_on_any(
            self,
            "SweeperErrorsAlarm",
            description="The sweeper failed: hand-over tickets stuck in pending are not queued "
            "again (the kefu-sweeper function's log says why)",
            metric=sweeper.function.metric_errors(
                period=Duration.minutes(5), statistic=cloudwatch.Stats.SUM
            ),
            topic=self.alarm_topic,
        )

    @property
    def handover_environment(self) -> Mapping[str, str]:
        """What a function needs to open tickets and queue them: the tickets table and queue."""
        return {
            "KEFU_TICKETS": "dynamodb",
            "KEFU_TICKETS_TABLE": self.tickets_table.table_name,
            "KEFU_QUEUE": "sqs",
            "KEFU_ESCALATION_QUEUE_URL": self.queue.queue_url,
        }

    def grant_handover(self, function: lambda_.IFunction) -> None:
        """Let `function` read and write tickets and queue hand-overs, and tell it where."""
        if function.role is None:
            raise ValueError("grant_handover needs a function with an execution role")
        self.tickets_table.grant_read_write_data(function)
        self.queue.grant_send_messages(function)
        self._acknowledge_tickets_grant(function.role, function="chat")
        acknowledge_key_wildcards(
            function.role,
            granted_by="the grants on the tickets table and the escalation queue",
        )
        if isinstance(function, lambda_.Function):
            for name, value in self.handover_environment.items():
                function.add_environment(name, value)

    def _acknowledge_tickets_grant(self, role: iam.IRole, *, function: str) -> None:
        table = self.tickets_table.node.default_child
        assert isinstance(table, dynamodb.CfnTable)
        logical_id = Stack.of(self).get_logical_id(table)
        Validations.of(role).acknowledge(
            Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::<{logical_id}.Arn>/index/*]",
                reason=f"The {function} function queries tickets by status and by session "
                "through the tickets table's two indexes, and only that table's.",
            )
        )

    def _alarm_topic(self, *, removal_policy: RemovalPolicy) -> sns.Topic:
        # CloudWatch publishes the alarms: it must be able to use the topic's key, so the topic
        # gets a key of its own rather than the one that encrypts customers' tickets.
        key = kms.Key(
            self,
            "AlarmKey",
            description="Encrypts Kefu's alarm notifications",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
            )
        )
        return sns.Topic(
            self, "AlarmTopic", display_name="Kefu alarms", master_key=key, enforce_ssl=True
        )
