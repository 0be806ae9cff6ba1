"""A customer types phone numbers, e-mail addresses, identity and card numbers into a
conversation that is handed to a human and rated; afterwards none of them is anywhere at rest.

The conversation goes through the chat Lambda's handler (API Gateway proxy events) and the
escalation Lambda's, on the local stack (SQLite files in the data folder, the in-process answer
cache) and on the AWS one (DynamoDB tables, SQS queues, SNS, all moto). Then every store is read
whole, byte for byte where it is a file, with every log line written meanwhile (the service log
at DEBUG, every other logger through the root one, and stdout and stderr): no planted value is
in any of them, written as the customer wrote it or without its spaces and dashes. What the
customer wrote is still kept, masked.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kefu.ports import AnswerContext, ModelAnswer
from tests.conftest import LambdaContext, reset_composition_root
from tests.functional.conftest import Invoke

# Chinese mobiles (as typed three ways) and a landline; international numbers; e-mails;
# resident identity numbers (valid check digits); bank cards (valid Luhn digits).
CN_PHONES = ("13812345678", "+86 137-1122-3344", "139 2233 4455", "010-62345678")
INTL_PHONES = ("+44 20 7946 0958", "+1 415 555 0123", "(415) 555-0199")
EMAILS = ("li.ming@example.com", "zhang_san+orders@mail.example.cn")
ID_NUMBERS = ("11010519491231002X", "44030419900307123X")
CARDS = ("4111 1111 1111 1111", "6222021234567890128", "5500-0000-0000-0004")
PLANTED = (*CN_PHONES, *INTL_PHONES, *EMAILS, *ID_NUMBERS, *CARDS)
_SEPARATORS = re.compile(r"[\s\-.()]")

# The customer's messages, in order: questions the knowledge base answers, one the model
# answers, an order question, a request for a human, and a message to the human.
MESSAGES: list[tuple[str, str | None]] = [
    (f"退款多久到账？我的手机 {CN_PHONES[0]}，邮箱 {EMAILS[0]}", None),
    ("How long does a refund take?", "en"),  # nothing personal: this answer may be cached
    (f"How long does a refund take? My card is {CARDS[2]}", "en"),
    (
        f"Is damage from water or drops covered under warranty? Call me back on {CN_PHONES[0]} "
        f"or {INTL_PHONES[0]}, card {CARDS[0]}",
        "en",
    ),
    (f"订单 20231105-8812 到哪了？身份证 {ID_NUMBERS[0]}，座机 {CN_PHONES[3]}", None),
    (f"转人工，电话 {CN_PHONES[1]}，邮箱 {EMAILS[1]}", None),
    (f"我的卡号 {CARDS[1]}，身份证 {ID_NUMBERS[1]}，美国电话 {INTL_PHONES[2]}", None),
]
COMMENT = f"太慢了，打我电话 {CN_PHONES[2]} 或 {INTL_PHONES[1]}"
AGENT_KEY = "agent-key-for-the-planted-data-test"


class _RepeatingModel:
    """A model that repeats the customer's phone number back to them, as one does that read it
    in an order record it looked up: the answer may say it, the stored turn may not."""

    name = "repeating"

    def __init__(self) -> None:
        self.questions: list[str] = []

    def answer(self, context: AnswerContext) -> ModelAnswer:
        self.questions.append(context.question)
        return ModelAnswer(
            text=f"Water damage is not covered. We will call you back on {CN_PHONES[0]}.",
            model=self.name,
        )


@dataclass
class Stack:
    """Where a stack keeps things, for the scan."""

    kind: str
    data_dir: Path
    aws: dict[str, Any] = field(default_factory=dict)  # clients and names, on the AWS stack
    scanned_messages: list[str] = field(default_factory=list)  # queue bodies, as sent


@pytest.fixture
def captured_logs(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """Every log line: the service log at DEBUG (the dev stage's level) and, through the root
    logger, every library's."""
    from kefu.observability import logger

    handler: Any = logger.registered_handler
    captured = io.StringIO()
    stream, level = handler.setStream(captured), logger.log_level
    logger.setLevel("DEBUG")
    caplog.set_level(logging.DEBUG)
    try:
        yield captured
    finally:
        handler.setStream(stream)
        logger.setLevel(level)


@pytest.fixture(params=["local", "aws"])
def stack(
    request: pytest.FixtureRequest, configured: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stack]:
    monkeypatch.setenv("KEFU_ORDERS", "sample")
    monkeypatch.setenv("KEFU_AGENT_API_KEY", AGENT_KEY)
    monkeypatch.setenv("KEFU_ANSWER_CACHE", "memory")
    if request.param == "local":
        reset_composition_root()
        yield Stack("local", configured)
        return
    with mock_aws():
        yield _aws_stack(configured, monkeypatch)


def _aws_stack(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Stack:
    from tests.functional.test_escalation_handler import create_handover_tables, subscribed_queue
    from tests.functional.test_insights_stores import create_insights_table

    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    sns = boto3.client("sns", region_name="us-east-1")
    create_handover_tables(dynamodb)
    create_insights_table(dynamodb, "insights")
    queue_url = sqs.create_queue(QueueName="escalation")["QueueUrl"]
    topic = sns.create_topic(Name="helpdesk")["TopicArn"]
    observer_url = subscribed_queue(sns, sqs, topic, "helpdesk-observer")
    for name, value in {
        "KEFU_SESSIONS": "dynamodb",
        "KEFU_SESSIONS_TABLE": "sessions",
        "KEFU_TICKETS": "dynamodb",
        "KEFU_TICKETS_TABLE": "tickets",
        "KEFU_INSIGHTS": "dynamodb",
        "KEFU_INSIGHTS_TABLE": "insights",
        "KEFU_QUEUE": "sqs",
        "KEFU_ESCALATION_QUEUE_URL": queue_url,
        "KEFU_IDEMPOTENCY_TABLE": "idempotency",
        "KEFU_NOTIFY_TOPIC_ARN": topic,
    }.items():
        monkeypatch.setenv(name, value)
    reset_composition_root()
    aws = {"dynamodb": dynamodb, "sqs": sqs, "queues": [queue_url, observer_url]}
    return Stack("aws", data_dir, aws=aws)


@pytest.fixture
def escalation() -> Iterator[None]:
    """The escalation function's channels and idempotency, built for this test's stack."""
    from functions.escalation import handler

    handler._notifiers.cache_clear()
    handler._escalate_once.cache_clear()
    yield
    handler._notifiers.cache_clear()
    handler._escalate_once.cache_clear()


def test_planted_personal_data_is_in_no_store_and_no_log(
    stack: Stack,
    invoke: Invoke,
    escalation: None,
    captured_logs: io.StringIO,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kefu.bootstrap import get_chat_service, get_desk

    model = _RepeatingModel()
    service = get_chat_service()
    service.model = model

    # Given a customer who plants personal data in every message of a conversation
    replies = []
    session_id: str | None = None
    for message, language in MESSAGES:
        request: dict[str, Any] = {"message": message}
        if session_id is not None:
            request["session_id"] = session_id
        if language is not None:
            request["language"] = language
        response = invoke(body=request)
        assert response["statusCode"] == 200, response["body"]
        reply = json.loads(response["body"])
        session_id = reply["session_id"]
        replies.append(reply)
    # ... whose conversation went to a human, and who rates it 1 with a comment
    assert replies[5]["outcome"] == "handed_over"
    assert replies[6]["handover"]["ticket_id"] == replies[5]["handover"]["ticket_id"]
    rated = invoke(
        "POST", "/v1/feedback", {"session_id": session_id, "rating": 1, "comment": COMMENT}
    )
    assert rated["statusCode"] == 200, rated["body"]

    # When the escalation function completes the hand-over, and the agent and the customer
    # read the ticket and the thread
    _escalate(stack)
    ticket_id = replies[5]["handover"]["ticket_id"]
    agent = {"X-Agent-Key": AGENT_KEY}
    viewed = invoke("GET", f"/v1/tickets/{ticket_id}", headers=agent)
    thread = invoke("GET", f"/v1/sessions/{session_id}/messages")
    assert viewed["statusCode"] == thread["statusCode"] == 200

    # Then the model answered the warranty question, which it saw masked; its answer repeated
    # the customer's number to them (so the scan below would find it, were it stored)
    assert model.questions, "the warranty question should reach the model"
    assert all("[phone]" in question for question in model.questions)
    assert CN_PHONES[0] in replies[3]["answer"]
    # And nothing the customer said is lost: every message is kept, masked
    assert session_id is not None
    session = service.sessions.get(session_id)
    assert session is not None
    assert session.turn_count == len(MESSAGES)
    ticket = get_desk().get(ticket_id)
    assert ticket.status == "open"
    kept = [turn.message for turn in session.turns] + [m.text for m in ticket.messages]
    assert any("[电话]" in text and "[邮箱]" in text for text in kept)
    assert any("[银行卡号]" in text and "[身份证号]" in text for text in kept)
    assert any("[phone]" in text and "[card number]" in text for text in kept)
    assert any(text.startswith("[1/5]") and "[电话]" in text for text in kept)
    # And no store, queue or log holds any planted value
    places = _stores(stack)
    places["the service log"] = captured_logs.getvalue()
    places["other logs"] = "\n".join(
        f"{record.getMessage()} {record.__dict__}" for record in caplog.records
    )
    printed = capsys.readouterr()
    places["stdout and stderr"] = printed.out + printed.err
    assert len(places["the service log"]) > 0
    leaks = [
        f"{value!r} in {place}"
        for place, text in places.items()
        for value in PLANTED
        if _holds(text, value)
    ]
    assert leaks == [], f"{stack.kind} stack: {leaks}"


def _escalate(stack: Stack) -> None:
    """Deliver what the escalation queue holds to the escalation function, as SQS does."""
    if stack.kind == "local":
        from kefu.adapters.queues import SqliteQueue
        from kefu.bootstrap import get_settings
        from local.escalation_worker import drain_once

        assert drain_once(SqliteQueue(get_settings().queue_path)) > 0
        return
    from functions.escalation.handler import lambda_handler
    from tests.functional.test_escalation_handler import event

    sqs, queue_url = stack.aws["sqs"], stack.aws["queues"][0]
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    stack.scanned_messages.extend(message["Body"] for message in messages)
    response = lambda_handler(event(messages), LambdaContext("kefu-escalation"))
    assert response["batchItemFailures"] == []


def _stores(stack: Stack) -> dict[str, str]:
    """The whole of every store the stack wrote to, as text."""
    from kefu.bootstrap import get_chat_service

    places: dict[str, str] = {}
    # Every file of the data folder, byte for byte (SQLite's WAL and free pages included).
    for path in sorted(stack.data_dir.rglob("*")):
        if path.is_file():
            places[f"file {path.name}"] = path.read_bytes().decode("utf-8", "replace")
    # The in-process answer cache.
    cache: Any = get_chat_service().cache
    places["the answer cache"] = "\n".join(
        key + value.decode("utf-8", "replace") for key, (_, value) in cache._entries.items()
    )
    assert cache._entries, "the plain question's answer should be cached"
    if stack.kind == "aws":
        dynamodb, sqs = stack.aws["dynamodb"], stack.aws["sqs"]
        for table in dynamodb.list_tables()["TableNames"]:
            items = dynamodb.scan(TableName=table)["Items"]
            places[f"table {table}"] = json.dumps(items, ensure_ascii=False)
        assert places["table sessions"] != "[]"
        places["the escalation queue's messages"] = "\n".join(stack.scanned_messages)
        assert stack.scanned_messages
        for url in stack.aws["queues"]:
            received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
            bodies = [m["Body"] for m in received.get("Messages", [])]
            places[f"queue {url.rsplit('/', 1)[-1]}"] = "\n".join(bodies)
        assert places["queue helpdesk-observer"], "the helpdesk should have been told"
    return places


def _holds(text: str, value: str) -> bool:
    """Whether `text` holds `value` as written, or without its separators, in any letter case
    (JSON escapes of the `+` and of non-ASCII text undone)."""
    text = text.replace("\\u002b", "+").replace("\\u002B", "+")
    if value.lower() in text.lower():
        return True
    bare = _SEPARATORS.sub("", value)
    return bare.lower() in _SEPARATORS.sub("", text).lower()
