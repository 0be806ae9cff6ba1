"""Telling the helpdesk: a signed webhook to a real HTTP receiver on loopback, SNS and Secrets
Manager through moto, and the log."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kefu.adapters.notifiers import (
    LogNotifier,
    SnsNotifier,
    WebhookNotifier,
    sign,
    verify,
    webhook_from_secret,
)
from kefu.errors import ConfigurationError, DependencyUnavailable
from kefu.observability import logger
from kefu.tickets import Ticket, TicketMessage, ticket_body

AT = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
SECRET = "whsec-test-7f3a"
TRANSCRIPT = "我的手机号是 138****5678, 我要投诉"


def a_ticket() -> Ticket:
    return Ticket(
        ticket_id="ticket-0001",
        session_id="session-0001",
        trigger="complaint",
        language="zh",
        created_at=AT,
        updated_at=AT,
        status="open",
        priority="urgent",
        summary="客户投诉快递延误",
        intent="shipping",
        slots={"order_id": "20231105-8812"},
        transcript=[TicketMessage("m1", "customer", TRANSCRIPT, AT)],
    )


@dataclass
class Delivery:
    """One request as the receiver saw it."""

    headers: dict[str, str]
    body: bytes
    signed: bool


@dataclass
class Receiver:
    """A helpdesk webhook on 127.0.0.1: answers each request with the next of `statuses` (the
    last one for good), checking the signature as a real receiver would."""

    statuses: list[int]
    secret: str = SECRET
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        signed = verify(
            self.secret,
            headers.get("X-Kefu-Timestamp", ""),
            body,
            headers.get("X-Kefu-Signature", ""),
        )
        self.deliveries.append(Delivery(headers, body, signed))
        if not signed:
            return 401
        return self.statuses[min(len(self.deliveries), len(self.statuses)) - 1]


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def start(*statuses: int, secret: str = SECRET) -> Receiver:
        state = Receiver(list(statuses), secret)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = state.answer(dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval: `shutdown` waits for the loop to look.
        serve = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
        serve.start()
        servers.append(server)
        state.url = f"http://127.0.0.1:{server.server_address[1]}/kefu/tickets"
        return state

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class Pauses(list[float]):
    """A `sleep` that records the pause instead of taking it."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_the_webhook_gets_the_whole_ticket_signed(receiver: Callable[..., Receiver]) -> None:
    # Given a helpdesk webhook that accepts
    helpdesk = receiver(200)
    pauses = Pauses()

    # When a ticket is notified
    WebhookNotifier(helpdesk.url, SECRET, sleep=pauses).notify(a_ticket())

    # Then one signed POST carried the whole ticket as JSON, at the first attempt
    (delivery,) = helpdesk.deliveries
    assert delivery.signed
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers["X-Kefu-Signature"].startswith("sha256=")
    assert json.loads(delivery.body) == ticket_body(a_ticket())
    assert pauses == []


def test_a_receiver_with_another_secret_refuses_and_it_is_not_retried(
    receiver: Callable[..., Receiver],
) -> None:
    helpdesk = receiver(200, secret="another-secret")

    with pytest.raises(DependencyUnavailable, match="401"):
        WebhookNotifier(helpdesk.url, SECRET, sleep=Pauses()).notify(a_ticket())

    assert [d.signed for d in helpdesk.deliveries] == [False]


def test_a_receiver_failing_twice_then_accepting_gets_one_delivery_id(
    receiver: Callable[..., Receiver],
) -> None:
    # Given a helpdesk that answers 503 twice, then accepts
    helpdesk = receiver(503, 503, 200)
    pauses = Pauses()

    # When a ticket is notified
    WebhookNotifier(helpdesk.url, SECRET, backoff=0.5, sleep=pauses).notify(a_ticket())

    # Then it took three attempts of the same delivery, each signed, backing off in between
    assert len(helpdesk.deliveries) == 3
    assert all(d.signed for d in helpdesk.deliveries)
    assert len({d.headers["X-Kefu-Delivery"] for d in helpdesk.deliveries}) == 1
    assert len({d.body for d in helpdesk.deliveries}) == 1
    assert pauses == [0.5, 1.0]


def test_a_receiver_that_stays_down_is_a_dependency_failure_after_every_attempt(
    receiver: Callable[..., Receiver],
) -> None:
    # Given a helpdesk that answers 500 to everything
    helpdesk = receiver(500)
    pauses = Pauses()

    # When a ticket is notified with 6 attempts
    notifier = WebhookNotifier(helpdesk.url, SECRET, attempts=6, backoff=1.5, sleep=pauses)
    with pytest.raises(DependencyUnavailable, match="500 after 6 attempts"):
        notifier.notify(a_ticket())

    # Then it tried 6 times, pausing exponentially but never more than 8 s
    assert len(helpdesk.deliveries) == 6
    assert pauses == [1.5, 3.0, 6.0, 8.0, 8.0]


@pytest.mark.parametrize("status", [408, 429])
def test_a_timeout_or_throttling_answer_is_retried(
    receiver: Callable[..., Receiver], status: int
) -> None:
    helpdesk = receiver(status, 204)

    WebhookNotifier(helpdesk.url, SECRET, sleep=Pauses()).notify(a_ticket())

    assert len(helpdesk.deliveries) == 2


@pytest.mark.parametrize("status", [400, 404, 410])
def test_a_client_error_is_not_retried(receiver: Callable[..., Receiver], status: int) -> None:
    helpdesk = receiver(status, 200)
    pauses = Pauses()

    with pytest.raises(DependencyUnavailable, match=str(status)):
        WebhookNotifier(helpdesk.url, SECRET, sleep=pauses).notify(a_ticket())

    assert len(helpdesk.deliveries) == 1
    assert pauses == []


def test_a_redirect_is_not_followed(receiver: Callable[..., Receiver]) -> None:
    helpdesk = receiver(302)

    with pytest.raises(DependencyUnavailable, match="302"):
        WebhookNotifier(helpdesk.url, SECRET, sleep=Pauses()).notify(a_ticket())

    assert len(helpdesk.deliveries) == 1


def test_a_refused_connection_is_retried_then_a_dependency_failure() -> None:
    # Given a loopback port nobody listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pauses = Pauses()

    notifier = WebhookNotifier(f"http://127.0.0.1:{port}/", SECRET, attempts=3, sleep=pauses)
    with pytest.raises(DependencyUnavailable, match="unreachable"):
        notifier.notify(a_ticket())

    assert pauses == [0.5, 1.0]


def test_a_receiver_that_does_not_answer_in_time_is_retried() -> None:
    # Given a receiver that accepts connections but never answers
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        pauses = Pauses()

        notifier = WebhookNotifier(url, SECRET, attempts=2, timeout=0.05, sleep=pauses)
        with pytest.raises(DependencyUnavailable, match="unreachable: TimeoutError"):
            notifier.notify(a_ticket())

    assert pauses == [0.5]


@pytest.mark.parametrize(
    "url",
    [
        "http://helpdesk.example.com/hook",
        "http://10.0.0.8/hook",
        "ftp://127.0.0.1/hook",
        "https:///no-host",
        "helpdesk.example.com/hook",
    ],
)
def test_a_webhook_url_that_is_not_https_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="https"):
        WebhookNotifier(url, SECRET)


@pytest.mark.parametrize(
    "url", ["https://helpdesk.example.com/hook", "http://localhost:8080/", "http://127.0.0.1/"]
)
def test_https_and_loopback_webhooks_are_accepted(url: str) -> None:
    assert WebhookNotifier(url, SECRET).name == "webhook"


def test_a_signature_checks_the_secret_the_timestamp_and_the_body() -> None:
    body = b'{"ticket_id": "ticket-0001"}'
    signature = sign(SECRET, "1795000000", body)

    assert verify(SECRET, "1795000000", body, signature)
    assert not verify("other", "1795000000", body, signature)
    assert not verify(SECRET, "1795000001", body, signature)
    assert not verify(SECRET, "1795000000", body + b" ", signature)
    assert not verify(SECRET, "1795000000", body, "sha256=" + "0" * 64)
    assert not verify(SECRET, "1795000000", body, "sha256=不是")


@pytest.fixture
def aws() -> Iterator[None]:
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()  # a provider built outside moto would reach for AWS
    with mock_aws():
        yield
    parameters.clear_caches()


def test_sns_publishes_a_short_notice_a_subscriber_receives(aws: None) -> None:
    # Given a topic with an SQS subscriber
    sns = boto3.client("sns", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    topic = sns.create_topic(Name="kefu-tickets")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="helpdesk")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    # When a ticket is notified
    notifier = SnsNotifier(topic, client=sns)
    notifier.notify(a_ticket())

    # Then the subscriber gets the notice, with the attributes a filter policy reads
    (message,) = sqs.receive_message(QueueUrl=queue_url)["Messages"]
    envelope = json.loads(message["Body"])
    assert notifier.name == "sns"
    assert json.loads(envelope["Message"]) == {
        "ticket_id": "ticket-0001",
        "session_id": "session-0001",
        "trigger": "complaint",
        "priority": "urgent",
        "language": "zh",
        "intent": "shipping",
        "summary": "客户投诉快递延误",
        "created_at": AT.isoformat(),
    }
    assert "ticket-0001" in envelope["Subject"]
    assert envelope["MessageAttributes"]["priority"]["Value"] == "urgent"
    assert envelope["MessageAttributes"]["trigger"]["Value"] == "complaint"
    assert TRANSCRIPT not in message["Body"]


def test_a_missing_topic_is_a_dependency_failure(aws: None) -> None:
    sns = boto3.client("sns", region_name="us-east-1")
    notifier = SnsNotifier("arn:aws:sns:us-east-1:123456789012:no-such-topic", client=sns)

    with pytest.raises(DependencyUnavailable):
        notifier.notify(a_ticket())


def test_the_webhook_is_configured_from_its_secret(
    aws: None, receiver: Callable[..., Receiver]
) -> None:
    # Given the webhook's URL and signing secret in Secrets Manager
    helpdesk = receiver(200, secret="from-the-vault")
    boto3.client("secretsmanager").create_secret(
        Name="kefu/webhook",
        SecretString=json.dumps({"url": helpdesk.url, "secret": "from-the-vault"}),
    )

    # When the notifier is built from it and notifies
    webhook_from_secret("kefu/webhook").notify(a_ticket())

    # Then the helpdesk got a request signed with that secret
    assert [d.signed for d in helpdesk.deliveries] == [True]


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        (None, "unreadable"),
        ("not json", "not JSON"),
        (json.dumps(["a", "list"]), "must hold"),
        (json.dumps({"url": "https://helpdesk.example.com"}), "must hold"),
        (json.dumps({"url": "", "secret": "s"}), "must hold"),
        (json.dumps({"url": "http://helpdesk.example.com", "secret": "s"}), "https"),
    ],
)
def test_a_missing_or_malformed_webhook_secret_is_a_configuration_error(
    aws: None, secret: str | None, problem: str
) -> None:
    if secret is not None:
        boto3.client("secretsmanager").create_secret(Name="kefu/webhook", SecretString=secret)

    with pytest.raises(ConfigurationError, match=problem) as raised:
        webhook_from_secret("kefu/webhook")

    assert "kefu/webhook" in str(raised.value)


def test_the_log_notice_names_the_ticket_but_never_its_transcript() -> None:
    # Given the service log, captured
    handler: Any = logger.registered_handler
    captured = io.StringIO()
    stream, level = handler.setStream(captured), logger.log_level
    logger.setLevel("INFO")
    try:
        # When a ticket is notified through the log
        LogNotifier().notify(a_ticket())
    finally:
        handler.setStream(stream)
        logger.setLevel(level)

    # Then one line names the ticket, its trigger and priority, and none of its words
    (line,) = captured.getvalue().splitlines()
    record = json.loads(line)
    assert (record["ticket_id"], record["trigger"], record["priority"]) == (
        "ticket-0001",
        "complaint",
        "urgent",
    )
    assert TRANSCRIPT not in line
    assert "快递" not in line
