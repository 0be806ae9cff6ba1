"""Hand-over to a human and learning from it: tickets, the escalation queue and its alarms, the
helpdesk topic, the sweeper, the agents' routes and policy, the insights and the monthly export."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Match
from cdk_nag import AwsSolutionsChecks

from infra_cdk.config import StageConfig, StageConfigError, stage_config_from_context
from tests.infra.synth import (
    ACCOUNT,
    ESCALATION_SERVICE,
    EXPORT_SERVICE,
    PARTITION,
    REGION,
    SWEEPER_SERVICE,
    SynthesizedStage,
    cdk_json_context,
    synthesize,
)
from tests.infra.test_cdk_chat_api import method
from tests.infra.test_cdk_chat_function import assert_every_kefu_variable_is_read

CUSTOMER_ROUTES = [
    ("POST", "/v1/chat"),
    ("POST", "/v1/feedback"),
    ("GET", "/v1/sessions/{session_id}/messages"),
    ("GET", "/v1/health"),
    ("GET", "/v1/openapi.json"),
]
AGENT_ROUTES = [
    ("GET", "/v1/tickets"),
    ("GET", "/v1/tickets/{ticket_id}"),
    ("POST", "/v1/tickets/{ticket_id}/reply"),
    ("POST", "/v1/tickets/{ticket_id}/close"),
]
WEBHOOK_SECRET = "kefu/dev/helpdesk-webhook"
# The dev stage with every hand-over setting moved off its default.
TUNED = {
    "webhook_secret_name": WEBHOOK_SECRET,
    "handover_after_failures": 4,
    "escalation_timeout_seconds": 120,
    "escalation_max_receive_count": 5,
    "sweep_every_minutes": 1,
    "export_schedule": "cron(0 4 ? * MON *)",
}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> SynthesizedStage:
    """The dev stage with a helpdesk webhook and its own hand-over settings."""
    return synthesize("dev", tmp_path_factory.mktemp("cdk-tuned-escalation"), overrides=TUNED)


def arn_of(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def variables(stage: SynthesizedStage, service: str) -> dict[str, Any]:
    found: dict[str, Any] = stage.resources[stage.function_id(service)]["Properties"][
        "Environment"
    ]["Variables"]
    return found


def escalation_queue_id(stage: SynthesizedStage) -> str:
    """The queue the chat function hands customers over to."""
    queue_id: str = stage.chat_variables()["KEFU_ESCALATION_QUEUE_URL"]["Ref"]
    return queue_id


def dead_letter_queue_id(stage: SynthesizedStage) -> str:
    queue = stage.resources[escalation_queue_id(stage)]["Properties"]
    dlq_id: str = queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    return dlq_id


def tickets_table_id(stage: SynthesizedStage) -> str:
    return stage.only_logical_id(
        "AWS::DynamoDB::Table", {"KeySchema": [{"AttributeName": "ticket_id", "KeyType": "HASH"}]}
    )


def insights_table_id(stage: SynthesizedStage) -> str:
    return stage.only_logical_id(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [
                {"AttributeName": "period", "KeyType": "HASH"},
                {"AttributeName": "key", "KeyType": "RANGE"},
            ]
        },
    )


def alarm_on(stage: SynthesizedStage, metric_name: str, queue_id: str) -> dict[str, Any]:
    alarm_id = stage.only_logical_id(
        "AWS::CloudWatch::Alarm",
        Match.object_like(
            {
                "Namespace": "AWS/SQS",
                "MetricName": metric_name,
                "Dimensions": [
                    {"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}
                ],
            }
        ),
    )
    alarm: dict[str, Any] = stage.resources[alarm_id]["Properties"]
    return alarm


def allows(statements: list[dict[str, Any]], action: str, resource: Any) -> bool:
    return any(
        statement["Effect"] == "Allow"
        and action in statement["Action"]
        and resource in statement["Resource"]
        for statement in statements
    )


def actions_of(statements: list[dict[str, Any]]) -> set[str]:
    return {action for statement in statements for action in statement["Action"]}


def execute_api_arn(stage: SynthesizedStage, http_method: str, path: str) -> dict[str, Any]:
    """The ARN that `execute-api:Invoke` names for one method of the stage's API."""
    api_id = stage.only_logical_id("AWS::ApiGateway::RestApi")
    stage_id = stage.only_logical_id("AWS::ApiGateway::Stage")
    route = "/".join("*" if part.startswith("{") else part for part in path.split("/"))
    return {
        "Fn::Join": [
            "",
            [
                "arn:",
                PARTITION,
                ":execute-api:",
                REGION,
                ":",
                ACCOUNT,
                ":",
                {"Ref": api_id},
                "/",
                {"Ref": stage_id},
                f"/{http_method}{route}",
            ],
        ]
    }


# --- the escalation queue -------------------------------------------------------------------


def assert_hand_overs_are_consumed_record_by_record(stage: SynthesizedStage) -> None:
    stage.template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "EventSourceArn": arn_of(escalation_queue_id(stage)),
            "FunctionName": {"Ref": stage.function_id(ESCALATION_SERVICE)},
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "BatchSize": 10,
            "MaximumBatchingWindowInSeconds": Match.any_value(),
        },
    )
    mapping = stage.template.find_resources(
        "AWS::Lambda::EventSourceMapping",
        {"Properties": {"FunctionName": {"Ref": stage.function_id(ESCALATION_SERVICE)}}},
    )
    [window] = [m["Properties"]["MaximumBatchingWindowInSeconds"] for m in mapping.values()]
    assert window <= 5, "a customer waits for a human: the batch may not wait long"


def test_the_escalation_function_consumes_hand_overs_reporting_failures_record_by_record(
    each_stage: SynthesizedStage,
) -> None:
    assert_hand_overs_are_consumed_record_by_record(each_stage)
    function = each_stage.resources[each_stage.function_id(ESCALATION_SERVICE)]["Properties"]
    assert function["Handler"] == "handler.lambda_handler"
    assert function["Timeout"] == each_stage.config.escalation_timeout_seconds


def assert_the_queue_is_encrypted_and_redrives_as_configured(stage: SynthesizedStage) -> None:
    config = stage.config
    queue = stage.resources[escalation_queue_id(stage)]["Properties"]
    dlq_id = dead_letter_queue_id(stage)
    dlq = stage.resources[dlq_id]["Properties"]

    assert queue["RedrivePolicy"]["maxReceiveCount"] == config.escalation_max_receive_count
    # Six times the function's timeout, so a hand-over is never handled twice at once.
    assert queue["VisibilityTimeout"] >= 6 * config.escalation_timeout_seconds
    assert 4 * 24 * 3600 <= queue["MessageRetentionPeriod"] <= 14 * 24 * 3600
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
    for queue_id in (escalation_queue_id(stage), dlq_id):
        key_id = stage.resources[queue_id]["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
        assert stage.resources[key_id]["Type"] == "AWS::KMS::Key"
        assert stage.resources[key_id]["Properties"]["EnableKeyRotation"] is True
        stage.template.has_resource_properties(
            "AWS::SQS::QueuePolicy",
            {
                "Queues": [{"Ref": queue_id}],
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                },
            },
        )


def test_the_escalation_queue_is_kms_encrypted_and_redrives_to_its_dead_letter_queue(
    each_stage: SynthesizedStage,
) -> None:
    assert each_stage.config.escalation_max_receive_count == 3
    assert_the_queue_is_encrypted_and_redrives_as_configured(each_stage)


def test_a_stage_sets_the_deliveries_and_the_timeout_of_a_hand_over(
    tuned: SynthesizedStage,
) -> None:
    assert_the_queue_is_encrypted_and_redrives_as_configured(tuned)
    assert_hand_overs_are_consumed_record_by_record(tuned)
    queue = tuned.resources[escalation_queue_id(tuned)]["Properties"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] == 5
    assert queue["VisibilityTimeout"] == 6 * 120


def test_failed_and_waiting_hand_overs_raise_alarms_someone_is_told_of(
    each_stage: SynthesizedStage,
) -> None:
    dead_letters = alarm_on(
        each_stage, "ApproximateNumberOfMessagesVisible", dead_letter_queue_id(each_stage)
    )
    waiting = alarm_on(each_stage, "ApproximateAgeOfOldestMessage", escalation_queue_id(each_stage))

    assert dead_letters["ComparisonOperator"] == "GreaterThanThreshold"
    assert dead_letters["Threshold"] == 0
    queue = each_stage.resources[escalation_queue_id(each_stage)]["Properties"]
    assert 0 < waiting["Threshold"] <= queue["VisibilityTimeout"]
    for alarm in (dead_letters, waiting):
        assert alarm["AlarmActions"], "an alarm nobody hears is no alarm"
        for action in alarm["AlarmActions"]:
            topic = each_stage.resources[action["Ref"]]
            assert topic["Type"] == "AWS::SNS::Topic"
            assert "KmsMasterKeyId" in topic["Properties"]


def test_cloudwatch_may_use_the_alarm_topics_key_to_publish(each_stage: SynthesizedStage) -> None:
    dead_letters = alarm_on(
        each_stage, "ApproximateNumberOfMessagesVisible", dead_letter_queue_id(each_stage)
    )
    [action] = dead_letters["AlarmActions"]
    topic = each_stage.resources[action["Ref"]]["Properties"]
    key = each_stage.resources[topic["KmsMasterKeyId"]["Fn::GetAtt"][0]]["Properties"]

    assert (
        Match.array_with(
            [
                Match.object_like(
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "cloudwatch.amazonaws.com"},
                        "Action": Match.array_with(["kms:Decrypt", "kms:GenerateDataKey*"]),
                    }
                )
            ]
        )
        .test(key["KeyPolicy"]["Statement"])
        .is_success
    )
    # The key of customers' tickets is not shared with CloudWatch.
    tickets_key = each_stage.table_key_id(tickets_table_id(each_stage))
    assert topic["KmsMasterKeyId"]["Fn::GetAtt"][0] != tickets_key


def test_every_topic_is_kms_encrypted_and_takes_only_tls(each_stage: SynthesizedStage) -> None:
    topics = each_stage.template.find_resources("AWS::SNS::Topic")

    assert len(topics) >= 2  # the helpdesk's and the alarms'
    for topic_id, topic in topics.items():
        key_id = topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
        assert each_stage.resources[key_id]["Properties"]["EnableKeyRotation"] is True
        each_stage.template.has_resource_properties(
            "AWS::SNS::TopicPolicy",
            {
                "Topics": [{"Ref": topic_id}],
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Action": "sns:Publish",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                },
            },
        )


# --- the tables -----------------------------------------------------------------------------


def test_tickets_are_kept_recoverable_encrypted_and_found_by_status_and_by_session(
    each_stage: SynthesizedStage,
) -> None:
    table_id = tickets_table_id(each_stage)
    key_id = each_stage.table_key_id(table_id)
    retained = "Retain" if each_stage.config.retain_data else "Delete"

    each_stage.template.has_resource(
        "AWS::DynamoDB::Table",
        {
            "Properties": Match.object_like(
                {
                    "KeySchema": [{"AttributeName": "ticket_id", "KeyType": "HASH"}],
                    "BillingMode": "PAY_PER_REQUEST",
                    "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                    "SSESpecification": {
                        "SSEEnabled": True,
                        "SSEType": "KMS",
                        "KMSMasterKeyId": arn_of(key_id),
                    },
                    "GlobalSecondaryIndexes": Match.array_with(
                        [
                            {
                                "IndexName": index_name,
                                "KeySchema": [
                                    {"AttributeName": partition_key, "KeyType": "HASH"},
                                    {"AttributeName": "created_at", "KeyType": "RANGE"},
                                ],
                                "Projection": {"ProjectionType": "ALL"},
                            }
                            for index_name, partition_key in (
                                ("by-status", "status"),
                                ("by-session", "session_id"),
                            )
                        ]
                    ),
                }
            ),
            "DeletionPolicy": retained,
        },
    )
    table = each_stage.resources[table_id]["Properties"]
    # Tickets are records of what customers were promised: never expired.
    assert "TimeToLiveSpecification" not in table
    assert {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]} == {
        "ticket_id": "S",
        "status": "S",
        "session_id": "S",
        "created_at": "S",
    }
    assert each_stage.resources[key_id]["Properties"]["EnableKeyRotation"] is True


def test_insights_expire_and_are_encrypted_and_recoverable(each_stage: SynthesizedStage) -> None:
    table = each_stage.resources[insights_table_id(each_stage)]["Properties"]

    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"]["SSEType"] == "KMS"
    assert "KMSMasterKeyId" in table["SSESpecification"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"


def test_the_escalation_idempotency_records_expire_as_powertools_expects(
    each_stage: SynthesizedStage,
) -> None:
    table_id = variables(each_stage, ESCALATION_SERVICE)["KEFU_IDEMPOTENCY_TABLE"]["Ref"]

    assert (
        Match.object_like(
            {
                "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
                "TimeToLiveSpecification": {"AttributeName": "expiration", "Enabled": True},
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                "SSESpecification": Match.object_like({"SSEEnabled": True, "SSEType": "KMS"}),
            }
        )
        .test(each_stage.resources[table_id]["Properties"])
        .is_success
    )


# --- the schedules --------------------------------------------------------------------------


def assert_runs_on(stage: SynthesizedStage, service: str, expression: str) -> None:
    function_arn = arn_of(stage.function_id(service))
    rule_id = stage.only_logical_id(
        "AWS::Events::Rule",
        Match.object_like(
            {
                "ScheduleExpression": expression,
                "Targets": [Match.object_like({"Arn": function_arn})],
            }
        ),
    )
    assert stage.resources[rule_id]["Properties"]["State"] == "ENABLED"
    stage.template.has_resource_properties(
        "AWS::Lambda::Permission",
        {
            "Action": "lambda:InvokeFunction",
            "Principal": "events.amazonaws.com",
            "FunctionName": function_arn,
            "SourceArn": arn_of(rule_id),
        },
    )


def test_the_sweeper_runs_every_few_minutes_and_the_export_monthly(
    each_stage: SynthesizedStage,
) -> None:
    assert_runs_on(each_stage, SWEEPER_SERVICE, "rate(5 minutes)")
    assert_runs_on(each_stage, EXPORT_SERVICE, "cron(0 3 1 * ? *)")
    sweeper = each_stage.resources[each_stage.function_id(SWEEPER_SERVICE)]["Properties"]
    escalation = each_stage.resources[each_stage.function_id(ESCALATION_SERVICE)]["Properties"]
    export = each_stage.resources[each_stage.function_id(EXPORT_SERVICE)]["Properties"]
    assert sweeper["Handler"] == "handler.sweep"
    assert sweeper["Code"] == escalation["Code"]  # one asset, uploaded once
    assert export["Handler"] == "handler.lambda_handler"
    assert export["Timeout"] == 300


def test_a_stage_sets_how_often_the_sweeper_and_the_export_run(tuned: SynthesizedStage) -> None:
    assert_runs_on(tuned, SWEEPER_SERVICE, "rate(1 minute)")
    assert_runs_on(tuned, EXPORT_SERVICE, "cron(0 4 ? * MON *)")


# --- the API --------------------------------------------------------------------------------


@pytest.mark.parametrize(("http_method", "path"), AGENT_ROUTES)
def test_agent_routes_are_authorized_by_iam_and_served_by_the_chat_function(
    each_stage: SynthesizedStage, http_method: str, path: str
) -> None:
    properties = method(each_stage, http_method, path)

    assert properties["AuthorizationType"] == "AWS_IAM"
    assert properties.get("ApiKeyRequired", False) is False
    integration = properties["Integration"]
    assert integration["Type"] == "AWS_PROXY"
    assert {"Ref": each_stage.chat_alias_id()} in integration["Uri"]["Fn::Join"][1]


@pytest.mark.parametrize(("http_method", "path"), CUSTOMER_ROUTES)
def test_customer_routes_are_not_iam_authorized(
    each_stage: SynthesizedStage, http_method: str, path: str
) -> None:
    properties = method(each_stage, http_method, path)

    assert properties["AuthorizationType"] == "NONE"
    assert {"Ref": each_stage.chat_alias_id()} in properties["Integration"]["Uri"]["Fn::Join"][1]


@pytest.mark.parametrize(
    ("http_method", "path"),
    [("POST", "/v1/feedback"), ("GET", "/v1/sessions/{session_id}/messages")],
)
def test_feedback_and_a_conversations_messages_need_the_api_key_as_chat_does(
    each_stage: SynthesizedStage, keyless: SynthesizedStage, http_method: str, path: str
) -> None:
    assert method(each_stage, http_method, path)["ApiKeyRequired"] is True
    assert method(keyless, http_method, path).get("ApiKeyRequired", False) is False


@pytest.mark.parametrize(
    "path", ["/v1/tickets/{ticket_id}/reply", "/v1/sessions/{session_id}/messages"]
)
def test_browsers_may_get_and_post_to_the_new_routes(
    each_stage: SynthesizedStage, path: str
) -> None:
    preflight = method(each_stage, "OPTIONS", path)
    headers = preflight["Integration"]["IntegrationResponses"][0]["ResponseParameters"]

    allowed = headers["method.response.header.Access-Control-Allow-Methods"]
    assert "GET" in allowed
    assert "POST" in allowed
    # An agent's console signs its calls.
    assert "Authorization" in headers["method.response.header.Access-Control-Allow-Headers"]


def test_the_agent_policy_allows_invoking_the_agent_routes_and_nothing_else(
    each_stage: SynthesizedStage,
) -> None:
    policy_id = each_stage.only_logical_id("AWS::IAM::ManagedPolicy")
    document = each_stage.resources[policy_id]["Properties"]["PolicyDocument"]

    [statement] = document["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "execute-api:Invoke"
    assert "Condition" not in statement
    resources = statement["Resource"]
    expected = [execute_api_arn(each_stage, verb, path) for verb, path in AGENT_ROUTES]
    assert sorted(map(json.dumps, resources)) == sorted(map(json.dumps, expected))
    for verb, path in CUSTOMER_ROUTES:
        assert execute_api_arn(each_stage, verb, path) not in resources
    each_stage.template.has_output("AgentPolicyArn", {"Value": {"Ref": policy_id}})


# --- the functions' configuration and permissions --------------------------------------------


def test_the_chat_function_opens_tickets_queues_hand_overs_and_records_insights(
    each_stage: SynthesizedStage,
) -> None:
    config = each_stage.config
    chat = each_stage.chat_variables()
    queue_id = escalation_queue_id(each_stage)

    assert chat["KEFU_TICKETS"] == "dynamodb"
    assert chat["KEFU_TICKETS_TABLE"] == {"Ref": tickets_table_id(each_stage)}
    assert chat["KEFU_QUEUE"] == "sqs"
    assert chat["KEFU_INSIGHTS"] == "dynamodb"
    assert chat["KEFU_INSIGHTS_TABLE"] == {"Ref": insights_table_id(each_stage)}
    assert chat["KEFU_AGENT_AUTH"] == "iam"
    assert chat["KEFU_HANDOVER_AFTER_FAILURES"] == str(config.handover_after_failures)
    # The queue it hands over to is the one the escalation function consumes.
    each_stage.template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "EventSourceArn": arn_of(queue_id),
            "FunctionName": {"Ref": each_stage.function_id(ESCALATION_SERVICE)},
        },
    )
    statements = each_stage.role_statements(each_stage.chat_role_id())
    tickets = arn_of(tickets_table_id(each_stage))
    assert allows(statements, "dynamodb:PutItem", tickets)
    assert allows(statements, "dynamodb:Query", tickets)
    assert allows(statements, "sqs:SendMessage", arn_of(queue_id))
    assert allows(statements, "dynamodb:PutItem", arn_of(insights_table_id(each_stage)))
    assert not allows(statements, "dynamodb:Scan", arn_of(insights_table_id(each_stage)))


def test_a_stage_sets_after_how_many_failed_turns_the_chat_hands_over(
    tuned: SynthesizedStage,
) -> None:
    assert tuned.chat_variables()["KEFU_HANDOVER_AFTER_FAILURES"] == "4"


def test_the_escalation_function_finds_tickets_sessions_its_table_and_the_helpdesk(
    each_stage: SynthesizedStage,
) -> None:
    found = variables(each_stage, ESCALATION_SERVICE)
    topic_id = found["KEFU_NOTIFY_TOPIC_ARN"]["Ref"]

    assert found["KEFU_TICKETS"] == "dynamodb"
    assert found["KEFU_TICKETS_TABLE"] == {"Ref": tickets_table_id(each_stage)}
    assert found["KEFU_SESSIONS"] == "dynamodb"
    assert found["KEFU_SESSIONS_TABLE"] == {"Ref": each_stage.sessions_table_id()}
    # The desk it builds names the queue too (no local SQLite queue in a Lambda).
    assert found["KEFU_QUEUE"] == "sqs"
    assert found["KEFU_ESCALATION_QUEUE_URL"] == {"Ref": escalation_queue_id(each_stage)}
    assert found["KEFU_INSIGHTS"] == "none"
    assert each_stage.resources[topic_id]["Type"] == "AWS::SNS::Topic"
    assert "KEFU_WEBHOOK_SECRET_NAME" not in found, "no stage in cdk.json names a webhook"
    each_stage.template.has_output("HelpdeskTopicArn", {"Value": {"Ref": topic_id}})
    each_stage.template.has_output(
        "EscalationQueueUrl", {"Value": {"Ref": escalation_queue_id(each_stage)}}
    )


def test_the_escalation_role_publishes_to_the_helpdesk_and_uses_its_idempotency_table(
    each_stage: SynthesizedStage,
) -> None:
    found = variables(each_stage, ESCALATION_SERVICE)
    topic_id = found["KEFU_NOTIFY_TOPIC_ARN"]["Ref"]
    idempotency = arn_of(found["KEFU_IDEMPOTENCY_TABLE"]["Ref"])
    topic_key = each_stage.resources[topic_id]["Properties"]["KmsMasterKeyId"]
    statements = each_stage.role_statements(each_stage.role_id(ESCALATION_SERVICE))

    assert allows(statements, "sns:Publish", {"Ref": topic_id})
    assert allows(statements, "kms:GenerateDataKey", topic_key) or allows(
        statements, "kms:GenerateDataKey*", topic_key
    )
    for action in ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"):
        assert allows(statements, action, idempotency), action
    tickets = arn_of(tickets_table_id(each_stage))
    assert allows(statements, "dynamodb:UpdateItem", tickets)
    sessions = arn_of(each_stage.sessions_table_id())
    assert allows(statements, "dynamodb:GetItem", sessions)
    assert not allows(statements, "dynamodb:PutItem", sessions), "sessions are only read"
    assert not {a for a in actions_of(statements) if a.startswith("secretsmanager:")}
    assert "sqs:SendMessage" not in actions_of(statements)


def test_a_helpdesk_webhook_is_read_from_the_enterprises_secret(tuned: SynthesizedStage) -> None:
    found = variables(tuned, ESCALATION_SERVICE)
    statements = tuned.role_statements(tuned.role_id(ESCALATION_SERVICE))

    assert found["KEFU_WEBHOOK_SECRET_NAME"] == WEBHOOK_SECRET
    [secret] = [s for s in statements if "secretsmanager:GetSecretValue" in s["Action"]]
    assert all(f"secret:{WEBHOOK_SECRET}-??????" in json.dumps(r) for r in secret["Resource"])
    # Only the escalation function reads it.
    for service in (SWEEPER_SERVICE, EXPORT_SERVICE):
        assert not {
            a
            for a in actions_of(tuned.role_statements(tuned.role_id(service)))
            if a.startswith("secretsmanager:")
        }


def test_the_sweeper_may_only_update_tickets_and_queue_them_again(
    each_stage: SynthesizedStage,
) -> None:
    found = variables(each_stage, SWEEPER_SERVICE)
    statements = each_stage.role_statements(each_stage.role_id(SWEEPER_SERVICE))
    queue = each_stage.resources[escalation_queue_id(each_stage)]["Properties"]

    assert found["KEFU_QUEUE"] == "sqs"
    assert found["KEFU_ESCALATION_QUEUE_URL"] == {"Ref": escalation_queue_id(each_stage)}
    assert found["KEFU_TICKETS_TABLE"] == {"Ref": tickets_table_id(each_stage)}
    assert found["KEFU_SESSIONS_TABLE"] == {"Ref": each_stage.sessions_table_id()}
    # Not before a delivery could have ended: it would queue a ticket being handled.
    assert int(found["KEFU_SWEEP_AFTER_SECONDS"]) >= queue["VisibilityTimeout"]
    assert allows(statements, "sqs:SendMessage", arn_of(escalation_queue_id(each_stage)))
    assert allows(statements, "dynamodb:UpdateItem", arn_of(tickets_table_id(each_stage)))
    assert not {a for a in actions_of(statements) if a.startswith(("sns:", "s3:", "bedrock:"))}
    assert not allows(statements, "dynamodb:GetItem", arn_of(each_stage.sessions_table_id()))


def test_the_export_reads_tickets_and_insights_and_only_writes_the_training_bucket(
    each_stage: SynthesizedStage,
) -> None:
    found = variables(each_stage, EXPORT_SERVICE)
    bucket_id = found["KEFU_EXPORT_BUCKET"]["Ref"]
    statements = each_stage.role_statements(each_stage.role_id(EXPORT_SERVICE))

    assert found["KEFU_TICKETS"] == "dynamodb"
    assert found["KEFU_TICKETS_TABLE"] == {"Ref": tickets_table_id(each_stage)}
    assert found["KEFU_INSIGHTS"] == "dynamodb"
    assert found["KEFU_INSIGHTS_TABLE"] == {"Ref": insights_table_id(each_stage)}
    for table in (tickets_table_id(each_stage), insights_table_id(each_stage)):
        assert allows(statements, "dynamodb:Query", arn_of(table))
        assert not allows(statements, "dynamodb:PutItem", arn_of(table))
    s3_actions = {a for a in actions_of(statements) if a.startswith("s3:")}
    assert s3_actions == {"s3:PutObject"}
    assert allows(statements, "s3:PutObject", {"Fn::Join": ["", [arn_of(bucket_id), "/*"]]})
    each_stage.template.has_output("TrainingBucketName", {"Value": {"Ref": bucket_id}})


def test_the_training_bucket_is_private_encrypted_versioned_https_only_and_logged(
    each_stage: SynthesizedStage,
) -> None:
    bucket_id = variables(each_stage, EXPORT_SERVICE)["KEFU_EXPORT_BUCKET"]["Ref"]
    bucket = each_stage.resources[bucket_id]["Properties"]
    encryption = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]

    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert "KMSMasterKeyID" in encryption["ServerSideEncryptionByDefault"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["LoggingConfiguration"]["DestinationBucketName"]["Ref"] in each_stage.resources
    each_stage.template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": bucket_id},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )


def test_with_a_webhook_every_variable_is_read_and_cdk_nag_finds_nothing(
    tuned: SynthesizedStage,
) -> None:
    assert_every_kefu_variable_is_read(tuned)
    assert AwsSolutionsChecks().validate_scope(tuned.app).violations == []


# --- the stage config -----------------------------------------------------------------------


def test_a_stage_hands_over_after_two_failures_and_exports_monthly_unless_told_otherwise() -> None:
    config = StageConfig(name="qa")

    assert config.handover_after_failures == 2
    assert config.webhook_secret_name is None
    assert (config.escalation_timeout_seconds, config.escalation_max_receive_count) == (60, 3)
    assert config.sweep_every_minutes == 5
    assert config.export_schedule == "cron(0 3 1 * ? *)"


@pytest.mark.parametrize("schedule", ["rate(7 days)", "cron(0 4 ? * MON *)"])
def test_an_export_schedule_may_be_a_rate_or_a_cron_expression(schedule: str) -> None:
    assert StageConfig(name="qa", export_schedule=schedule).export_schedule == schedule


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ({"export_schedule": "monthly"}, "EventBridge schedule expression"),
        ({"export_schedule": "cron()"}, "EventBridge schedule expression"),
        ({"export_schedule": "at(2026-01-01T03:00:00)"}, "EventBridge schedule expression"),
        ({"export_schedule": "0 3 1 * ? *"}, "EventBridge schedule expression"),
        ({"handover_after_failures": 0}, "handover_after_failures"),
        ({"handover_after_failures": 11}, "handover_after_failures"),
        (
            {"webhook_secret_name": "arn:aws:secretsmanager:eu-central-1:1:secret:x"},
            "webhook_secret_name",
        ),
        ({"escalation_max_receive_count": 0}, "escalation_max_receive_count"),
        ({"sweep_every_minutes": 0}, "sweep_every_minutes"),
        ({"escalation_timeout_seconds": 901}, "escalation_timeout_seconds"),
        # shorter than a record's budget: every hand-over would be handed back untried
        ({"escalation_timeout_seconds": 30}, "escalation_timeout_seconds"),
    ],
)
def test_a_bad_hand_over_setting_is_refused_with_the_field_named(
    override: dict[str, Any], complaint: str
) -> None:
    context = cdk_json_context()
    context["stages"]["dev"] = {**context["stages"]["dev"], **override}

    with pytest.raises(StageConfigError, match=complaint):
        stage_config_from_context(App(context=context))


def test_the_smallest_escalation_timeout_leaves_a_record_its_budget() -> None:
    from functions.escalation.handler import RECORD_BUDGET_MS
    from infra_cdk.config import StageConfig

    smallest = StageConfig.model_fields["escalation_timeout_seconds"].metadata
    minimum = next(item.ge for item in smallest if hasattr(item, "ge"))
    assert minimum * 1000 >= RECORD_BUDGET_MS + 10_000
