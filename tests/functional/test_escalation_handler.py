"""The escalation Lambda against moto (SQS with its DLQ, DynamoDB, SNS, Secrets Manager) and a
real webhook receiver on loopback that checks the HMAC signature."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws

from kefu.adapters.notifiers import verify
from kefu.models import Session, Turn
from kefu.tickets import HandoverMessage
from tests.conftest import LambdaContext, reset_composition_root
from tests.functional.test_ticket_stores import create_tickets_table

SECRET = "whsec-escalation-test"
MAX_RECEIVES = 3


@dataclass
class Receiver:
    """A helpdesk webhook: records each delivery whose signature verifies; `down` answers 503."""

    url: str = ""
    down: bool = False
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    forged: int = 0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if state.down:
                self.send_response(503)
            elif verify(
                SECRET, self.headers["X-Kefu-Timestamp"], body, self.headers["X-Kefu-Signature"]
            ):
                state.deliveries.append(json.loads(body))
                self.send_response(204)
            else:
                state.forged += 1
                self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/kefu"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class Cloud:
    queue_url: str
    dlq_url: str
    observer_url: str  # an SQS queue subscribed to the helpdesk topic
    sqs: Any
    dynamodb: Any


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> Iterator[Cloud]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dlq_url = sqs.create_queue(QueueName="escalation-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        queue_url = sqs.create_queue(
            QueueName="escalation",
            Attributes={
                "VisibilityTimeout": "0",
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVES)}
                ),
            },
        )["QueueUrl"]
        create_tickets_table(dynamodb, "tickets")
        for table, key in (("sessions", "session_id"), ("idempotency", "id")):
            dynamodb.create_table(
                TableName=table,
                KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        sns = boto3.client("sns", region_name="us-east-1")
        topic = sns.create_topic(Name="helpdesk")["TopicArn"]
        observer_url = sqs.create_queue(QueueName="observer")["QueueUrl"]
        observer_arn = sqs.get_queue_attributes(QueueUrl=observer_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=observer_arn)
        boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="kefu/webhook", SecretString=json.dumps({"url": receiver.url, "secret": SECRET})
        )
        for name, value in {
            "KEFU_TICKETS": "dynamodb",
            "KEFU_TICKETS_TABLE": "tickets",
            "KEFU_SESSIONS": "dynamodb",
            "KEFU_SESSIONS_TABLE": "sessions",
            "KEFU_QUEUE": "sqs",
            "KEFU_ESCALATION_QUEUE_URL": queue_url,
            "KEFU_IDEMPOTENCY_TABLE": "idempotency",
            "KEFU_NOTIFY_TOPIC_ARN": topic,
            "KEFU_WEBHOOK_SECRET_NAME": "kefu/webhook",
            "KEFU_INSIGHTS": "none",
        }.items():
            monkeypatch.setenv(name, value)
        # The webhook's backoff pauses are not waited out here.
        monkeypatch.setattr("time.sleep", lambda _: None)
        reset_composition_root()
        parameters.clear_caches()  # the webhook secret of an earlier test's receiver
        from functions.escalation import handler

        handler._notifiers.cache_clear()
        handler._escalate_once.cache_clear()
        yield Cloud(queue_url, dlq_url, observer_url, sqs, dynamodb)
        handler._notifiers.cache_clear()
        handler._escalate_once.cache_clear()
        reset_composition_root()


def hand_over(session_id: str = "session-0001") -> str:
    """What the chat function does: the session stored, a ticket written and queued."""
    from kefu.bootstrap import get_desk

    desk = get_desk()
    at = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    turn = Turn(
        "turn-1",
        "my parcel is late, phone [已隐藏]",
        "Sorry …",
        "zh",
        "answered",
        "shipping",
        at,
        ("ship-01-zh",),
    )
    desk.sessions.save(Session(session_id, turns=[turn], intent="shipping", summary="late parcel"))
    ticket = desk.open(
        session_id=session_id, trigger="customer_request", language="zh", message="转人工"
    )
    assert desk.dispatch(ticket, "转人工")
    return ticket.ticket_id


def receive(cloud: Cloud, url: str | None = None) -> list[dict[str, Any]]:
    response = cloud.sqs.receive_message(
        QueueUrl=url or cloud.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
    )
    return response.get("Messages", [])


def event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping delivers."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1796000000000",
                    "SenderId": "AIDAEXAMPLE",
                    "ApproximateFirstReceiveTimestamp": "1796000000001",
                },
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:escalation",
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


def run(records: dict[str, Any]) -> list[str]:
    from functions.escalation.handler import lambda_handler

    response = lambda_handler(records, LambdaContext("kefu-escalation"))
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def ticket(ticket_id: str) -> Any:
    from kefu.bootstrap import get_desk

    return get_desk().tickets.get(ticket_id)


def test_a_hand_over_is_completed_and_announced_on_every_channel(
    cloud: Cloud, receiver: Receiver
) -> None:
    ticket_id = hand_over()
    assert run(event(receive(cloud))) == []
    stored = ticket(ticket_id)
    assert stored.status == "open"
    assert stored.summary == "late parcel"
    assert stored.intent == "shipping"
    assert stored.sources == ["ship-01-zh"]
    assert sorted(stored.notified) == ["sns", "webhook"]
    assert [d["ticket_id"] for d in receiver.deliveries] == [ticket_id]
    assert receiver.forged == 0
    published = [
        json.loads(json.loads(m["Body"])["Message"]) for m in receive(cloud, cloud.observer_url)
    ]
    assert [p["ticket_id"] for p in published] == [ticket_id]


def test_a_redelivered_message_makes_no_second_ticket_or_notice(
    cloud: Cloud, receiver: Receiver
) -> None:
    ticket_id = hand_over()
    records = event(receive(cloud))
    assert run(records) == []
    assert run(records) == []  # SQS delivers at least once
    tickets = cloud.dynamodb.scan(TableName="tickets")["Items"]
    assert [item["ticket_id"]["S"] for item in tickets] == [ticket_id]
    assert len(receiver.deliveries) == 1
    assert len(receive(cloud, cloud.observer_url)) == 1


def test_a_malformed_message_fails_alone_and_ends_in_the_dlq(
    cloud: Cloud, receiver: Receiver
) -> None:
    ticket_id = hand_over()
    cloud.sqs.send_message(QueueUrl=cloud.queue_url, MessageBody='{"ticket_id": "x"')
    cloud.sqs.send_message(QueueUrl=cloud.queue_url, MessageBody=json.dumps({"hello": 1}))
    messages = receive(cloud)
    bad = {m["MessageId"] for m in messages if ticket_id not in m["Body"]}
    failed = run(event(messages))
    assert set(failed) == bad
    assert ticket(ticket_id).status == "open"
    for m in messages:
        if m["MessageId"] not in failed:
            cloud.sqs.delete_message(QueueUrl=cloud.queue_url, ReceiptHandle=m["ReceiptHandle"])
    # Redelivered until maxReceiveCount, then SQS moves them to the DLQ.
    for _ in range(MAX_RECEIVES):
        again = receive(cloud)
        if again:
            assert set(run(event(again))) == {m["MessageId"] for m in again}
    assert receive(cloud) == []
    assert {m["MessageId"] for m in receive(cloud, cloud.dlq_url)} == bad


def test_a_webhook_outage_loses_nothing(cloud: Cloud, receiver: Receiver) -> None:
    ticket_id = hand_over()
    receiver.down = True
    records = event(receive(cloud))
    assert run(records) == [records["Records"][0]["messageId"]]
    stored = ticket(ticket_id)
    assert stored.status == "open"  # agents see it even while the helpdesk is not told
    assert stored.notified == ["sns"]
    receiver.down = False
    assert run(records) == []  # the redelivery tells the webhook only
    assert [d["ticket_id"] for d in receiver.deliveries] == [ticket_id]
    assert len(receive(cloud, cloud.observer_url)) == 1
    assert sorted(ticket(ticket_id).notified) == ["sns", "webhook"]


def test_the_sweeper_queues_a_ticket_whose_send_failed(cloud: Cloud) -> None:
    from functions.escalation.handler import sweep
    from kefu.bootstrap import get_desk

    desk = get_desk()
    old = datetime.now(UTC) - timedelta(hours=1)
    stuck = desk.open(session_id="session-0002", trigger="low_rating", language="en", message="")
    desk.tickets.save(_aged(stuck.ticket_id, old))  # its send failed an hour ago
    assert receive(cloud) == []
    assert sweep({}, LambdaContext("kefu-sweeper")) == {"swept": [stuck.ticket_id]}
    assert run(event(receive(cloud))) == []
    assert ticket(stuck.ticket_id).status == "open"


def _aged(ticket_id: str, at: datetime) -> Any:
    from dataclasses import replace

    return replace(ticket(ticket_id), created_at=at, needs_sweep=True)


def test_a_hand_over_message_round_trips() -> None:
    message = HandoverMessage(
        ticket_id="t" * 12,
        session_id="s" * 12,
        trigger="complaint",
        language="en",
        created_at=datetime(2026, 12, 7, tzinfo=UTC),
    )
    assert HandoverMessage.model_validate_json(message.model_dump_json()) == message
