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
    secret: str = SECRET
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
                state.secret,
                self.headers["X-Kefu-Timestamp"],
                body,
                self.headers["X-Kefu-Signature"],
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


def create_handover_tables(dynamodb: Any) -> None:
    """The tables a hand-over writes: `tickets`, `sessions` and the handler's `idempotency`."""
    create_tickets_table(dynamodb, "tickets")
    for table, key in (("sessions", "session_id"), ("idempotency", "id")):
        dynamodb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )


def subscribed_queue(sns: Any, sqs: Any, topic: str, name: str) -> str:
    """The URL of a new queue `name` subscribed to `topic`: what the topic publishes lands there."""
    url: str = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    return url


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
        create_handover_tables(dynamodb)
        sns = boto3.client("sns", region_name="us-east-1")
        topic = sns.create_topic(Name="helpdesk")["TopicArn"]
        observer_url = subscribed_queue(sns, sqs, topic, "observer")
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


class ShortContext(LambdaContext):
    """An invocation with `left_ms` left."""

    def __init__(self, left_ms: int) -> None:
        super().__init__("kefu-escalation")
        self.left_ms = left_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.left_ms


def run(records: dict[str, Any], context: LambdaContext | None = None) -> list[str]:
    from functions.escalation.handler import lambda_handler

    response = lambda_handler(records, context or LambdaContext("kefu-escalation"))
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


def test_idempotency_records_keep_a_redelivery_from_telling_the_helpdesk_again(
    cloud: Cloud, receiver: Receiver
) -> None:
    # Given a hand-over whose ticket the chat function could not write (the message carries it)
    message = HandoverMessage(
        ticket_id="ticket-written-late",
        session_id="session-0003",
        trigger="complaint",
        language="en",
        created_at=datetime(2026, 12, 7, 9, 0, tzinfo=UTC),
        message="I want to make a complaint",
    )
    cloud.sqs.send_message(QueueUrl=cloud.queue_url, MessageBody=message.model_dump_json())
    records = event(receive(cloud))
    assert run(records) == []
    # the escalation is recorded as done
    [record] = cloud.dynamodb.scan(TableName="idempotency")["Items"]
    assert record["status"]["S"] == "COMPLETED"

    # When the ticket forgets it told the webhook (only the idempotency record remembers)
    from dataclasses import replace

    from kefu.bootstrap import get_desk

    desk = get_desk()
    desk.tickets.save(replace(ticket("ticket-written-late"), notified=["sns"]))
    assert run(records) == []

    # Then the redelivery told nobody again
    assert [d["ticket_id"] for d in receiver.deliveries] == ["ticket-written-late"]
    assert ticket("ticket-written-late").priority == "high"


def test_a_forwarded_customer_message_joins_its_ticket_once(
    cloud: Cloud, receiver: Receiver
) -> None:
    from kefu.bootstrap import get_desk

    desk = get_desk()
    ticket_id = hand_over("session-0004")
    # The customer writes while the ticket store could not take it: the chat function queues it
    assert desk.forward(
        ticket_id=ticket_id,
        session_id="session-0004",
        turn_id="turn-2",
        text="还在吗？",
        language="zh",
    )
    messages = receive(cloud)
    forwarded = [m for m in messages if '"kind":"message"' in m["Body"]]
    handed_over = [m for m in messages if m not in forwarded]
    assert (len(forwarded), len(handed_over)) == (1, 1)
    # Delivered before the hand-over has completed the ticket, it joins it all the same
    assert run(event(forwarded)) == []
    assert run(event(handed_over)) == []
    assert run(event(forwarded)) == []  # and again: at least once
    stored = ticket(ticket_id)
    assert [m.text for m in stored.messages] == ["还在吗？"]
    assert stored.status == "open"
    assert len(receiver.deliveries) == 1  # a forwarded message tells the helpdesk nothing new


def test_records_are_handed_back_when_the_invocation_runs_short(
    cloud: Cloud, receiver: Receiver
) -> None:
    from functions.escalation.handler import RECORD_BUDGET_MS

    ticket_id = hand_over("session-0005")
    records = event(receive(cloud))
    failed = run(records, ShortContext(RECORD_BUDGET_MS - 1))
    assert failed == [records["Records"][0]["messageId"]]
    assert ticket(ticket_id).status == "pending"  # untouched, redelivered later
    assert receiver.deliveries == []
    assert run(records, ShortContext(RECORD_BUDGET_MS + 60_000)) == []
    assert ticket(ticket_id).status == "open"


def test_the_worst_webhook_record_fits_the_budget() -> None:
    from functions.escalation.handler import RECORD_BUDGET_MS
    from kefu.adapters.notifiers import MAX_BACKOFF, WebhookNotifier

    webhook = WebhookNotifier("https://helpdesk.example/kefu", "s")
    attempts, timeout, backoff = webhook._attempts, webhook._timeout, webhook._backoff
    pauses = sum(min(backoff * 2**n, MAX_BACKOFF) for n in range(attempts - 1))
    assert (attempts * timeout + pauses) * 1000 < RECORD_BUDGET_MS


def test_a_rotated_webhook_secret_is_picked_up(
    cloud: Cloud, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.escalation import handler

    hand_over("session-0006")
    assert run(event(receive(cloud))) == []
    # The secret is rotated: the receiver checks the new one
    boto3.client("secretsmanager", region_name="us-east-1").put_secret_value(
        SecretId="kefu/webhook",
        SecretString=json.dumps({"url": receiver.url, "secret": "whsec-rotated"}),
    )
    receiver.secret = "whsec-rotated"
    # Once the channels and the cached secret are older than their age limit
    later = handler.time.monotonic() + handler.NOTIFIERS_MAX_AGE_SECONDS + 1
    monkeypatch.setattr(handler.time, "monotonic", lambda: later)
    parameters.clear_caches()  # Powertools' own max_age has run out too
    hand_over("session-0007")
    assert run(event(receive(cloud))) == []
    assert len(receiver.deliveries) == 2
    assert receiver.forged == 0


def test_a_webhook_that_stays_down_sends_the_message_to_the_dlq_and_keeps_the_ticket(
    cloud: Cloud, receiver: Receiver
) -> None:
    ticket_id = hand_over("session-0008")
    receiver.down = True
    for _ in range(MAX_RECEIVES):
        messages = receive(cloud)
        assert len(messages) == 1
        assert run(event(messages)) == [messages[0]["MessageId"]]
    # SQS moves it to the dead-letter queue after maxReceiveCount
    assert receive(cloud) == []
    [dead] = receive(cloud, cloud.dlq_url)
    assert HandoverMessage.model_validate_json(dead["Body"]).ticket_id == ticket_id
    stored = ticket(ticket_id)
    assert stored.status == "open"  # stored, complete, and listed for agents
    assert stored.notified == ["sns"]
    assert receiver.deliveries == []
