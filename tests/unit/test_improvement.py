"""The improvement loop: closed tickets as chat-format training examples, declined questions as
knowledge gaps, month windows, and the monthly export into a folder.

The stores are small in-memory fakes of the ports (the export handler's tests use them too).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from kefu.errors import DependencyUnavailable
from kefu.improvement import (
    QUESTIONS_PER_CATEGORY,
    SYSTEM_PROMPT,
    DirectorySink,
    S3Sink,
    export_month,
    knowledge_gaps,
    main,
    month_of,
    previous_month,
    training_examples,
)
from kefu.ports import TicketConflict
from kefu.tickets import (
    Author,
    FeedbackRecord,
    Ticket,
    TicketMessage,
    TicketStatus,
    Trigger,
    TurnRecord,
)

NOVEMBER = datetime(2026, 11, 1, tzinfo=UTC)
DECEMBER = datetime(2026, 12, 1, tzinfo=UTC)


class MemoryTicketStore:
    """An in-memory `TicketStore`."""

    def __init__(self, tickets: list[Ticket] | None = None) -> None:
        self.tickets: dict[str, Ticket] = {}
        for ticket in tickets or ():
            self.create(ticket)

    def create(self, ticket: Ticket) -> bool:
        if ticket.ticket_id in self.tickets:
            return False
        self.tickets[ticket.ticket_id] = replace(ticket, version=1)
        return True

    def get(self, ticket_id: str) -> Ticket | None:
        return self.tickets.get(ticket_id)

    def save(self, ticket: Ticket) -> None:
        stored = self.tickets.get(ticket.ticket_id)
        if stored is None or stored.version != ticket.version:
            raise TicketConflict(ticket.ticket_id)
        self.tickets[ticket.ticket_id] = replace(ticket, version=ticket.version + 1)

    def by_status(
        self,
        status: TicketStatus,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Ticket]:
        found = sorted(
            (
                t
                for t in self.tickets.values()
                if t.status == status
                and (since is None or t.created_at >= since)
                and (until is None or t.created_at < until)
            ),
            key=lambda t: t.created_at,
            reverse=newest_first,
        )
        return found[:limit] if limit is not None else found

    def by_session(self, session_id: str) -> list[Ticket]:
        return sorted(
            (t for t in self.tickets.values() if t.session_id == session_id),
            key=lambda t: t.created_at,
        )


class MemoryInsights:
    """An in-memory `Insights`."""

    def __init__(
        self,
        turns: list[TurnRecord] | None = None,
        feedback: list[FeedbackRecord] | None = None,
    ) -> None:
        self._turns = list(turns or ())
        self._feedback = list(feedback or ())

    def record_turn(self, record: TurnRecord) -> None:
        self._turns.append(record)

    def record_feedback(self, record: FeedbackRecord) -> None:
        self._feedback.append(record)

    def turns(self, since: datetime, until: datetime) -> list[TurnRecord]:
        return sorted((t for t in self._turns if since <= t.at < until), key=lambda t: t.at)

    def feedback(self, since: datetime, until: datetime) -> list[FeedbackRecord]:
        return sorted((f for f in self._feedback if since <= f.at < until), key=lambda f: f.at)


def message(author: Author, text: str, minute: int = 0, agent: str = "") -> TicketMessage:
    at = datetime(2026, 11, 3, 9, minute, tzinfo=UTC)
    return TicketMessage(message_id=f"m{minute}", author=author, text=text, at=at, agent=agent)


def ticket(
    ticket_id: str = "tk-00000001",
    *,
    transcript: list[TicketMessage] | None = None,
    messages: list[TicketMessage] | None = None,
    status: TicketStatus = "closed",
    created_at: datetime = datetime(2026, 11, 3, 9, 0, tzinfo=UTC),
    trigger: Trigger = "customer_request",
) -> Ticket:
    return Ticket(
        ticket_id=ticket_id,
        session_id=f"s-{ticket_id}",
        trigger=trigger,
        language="zh",
        created_at=created_at,
        updated_at=created_at,
        status=status,
        intent="refund",
        transcript=transcript
        if transcript is not None
        else [message("customer", "我的退款还没到账", 0), message("bot", "抱歉，我无法确定。", 1)],
        messages=messages
        if messages is not None
        else [
            message("customer", "转人工", 2),
            message("agent", "您好，退款已在处理中，预计3个工作日到账。", 3, agent="li"),
        ],
        closed_at=created_at + timedelta(hours=1) if status == "closed" else None,
    )


def declined(question: str, category: str = "", minute: int = 0) -> TurnRecord:
    return TurnRecord(
        session_id="s-1",
        turn_id=f"t{minute}-{question}",
        at=datetime(2026, 11, 5, 10, minute, tzinfo=UTC),
        tenant="default",
        language="en",
        outcome="declined",
        intent="",
        latency_ms=800.0,
        question=question,
        category=category,
    )


# --- training examples --------------------------------------------------------------------


def test_a_closed_ticket_becomes_one_chat_example_with_its_metadata() -> None:
    # Given a closed ticket: two turns with the bot, then the customer asked for a person
    closed = ticket()

    # When it is turned into training data
    [example] = training_examples([closed])

    # Then the system prompt comes first, the customer speaks as user, bot and agent as assistant
    roles = [m["role"] for m in example["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert example["messages"][0]["content"] == SYSTEM_PROMPT
    assert example["messages"][-1]["content"] == "您好，退款已在处理中，预计3个工作日到账。"
    assert example["metadata"] == {
        "ticket_id": "tk-00000001",
        "trigger": "customer_request",
        "language": "zh",
        "intent": "refund",
        "closed_at": "2026-11-03T10:00:00+00:00",
    }


def test_consecutive_messages_of_one_role_merge_so_roles_alternate() -> None:
    # Given a thread where the customer wrote twice, and the bot's hand-over notice and the
    # agent's first reply follow each other
    thread = ticket(
        transcript=[
            message("bot", "您好，请问有什么可以帮您？", 0),
            message("customer", "订单没收到", 1),
            message("customer", "已经一周了", 2),
            message("bot", "正在为您转接人工客服。", 3),
        ],
        messages=[
            message("agent", "您好，我是小李。", 4, agent="li"),
            message("agent", "您的包裹明天送达。", 5, agent="li"),
        ],
    )

    [example] = training_examples([thread])

    # Then the conversation starts with the customer and the roles alternate
    turns = example["messages"][1:]
    assert [t["role"] for t in turns] == ["user", "assistant"]
    assert turns[0]["content"] == "订单没收到\n\n已经一周了"
    assert turns[1]["content"] == "正在为您转接人工客服。\n\n您好，我是小李。\n\n您的包裹明天送达。"


def test_phone_and_email_an_agent_typed_are_masked() -> None:
    # Given an agent reply carrying a phone number and an e-mail address
    reply = message("agent", "请拨打 13812345678 或写信到 li.ming@example.com 联系我们。", 3)
    leaky = ticket(messages=[message("customer", "怎么联系你们？", 2), reply])

    [example] = training_examples([leaky])

    # Then neither reaches the training data
    answer = example["messages"][-1]["content"]
    assert "13812345678" not in answer
    assert "li.ming@example.com" not in answer
    assert "[电话]" in answer
    assert "[邮箱]" in answer


def test_deployment_patterns_are_masked_too() -> None:
    import re

    reply = message("agent", "会员号 VIP-884211 已核实。", 3)
    member = ticket(messages=[message("customer", "查一下会员", 2), reply])

    [example] = training_examples([member], extra=[re.compile(r"VIP-\d{6}")])

    assert "VIP-884211" not in example["messages"][-1]["content"]


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param([], id="no thread after the hand-over"),
        pytest.param([message("customer", "还在吗？", 2)], id="the customer spoke last"),
        pytest.param(
            [message("customer", "喂？", 2), message("agent", "   ", 3)],
            id="an empty agent reply",
        ),
    ],
)
def test_a_conversation_with_no_agent_reply_is_dropped(
    messages: list[TicketMessage],
) -> None:
    assert training_examples([ticket(messages=messages)]) == []


def test_what_the_customer_wrote_after_the_last_reply_is_left_out() -> None:
    thanked = ticket(
        messages=[
            message("customer", "转人工", 2),
            message("agent", "退款已在处理中。", 3, agent="li"),
            message("customer", "好的谢谢", 4),
        ]
    )
    [example] = training_examples([thanked])
    assert example["messages"][-1] == {"role": "assistant", "content": "退款已在处理中。"}


def test_an_agent_reply_with_no_customer_message_before_it_is_dropped() -> None:
    lonely = ticket(transcript=[], messages=[message("agent", "您好，请问还需要帮助吗？", 1)])
    assert training_examples([lonely]) == []


def test_only_closed_tickets_become_examples() -> None:
    tickets = [ticket("tk-open0001", status="open"), ticket("tk-closed01")]
    assert [e["metadata"]["ticket_id"] for e in training_examples(tickets)] == ["tk-closed01"]


# --- knowledge gaps -----------------------------------------------------------------------


def test_declined_questions_are_grouped_by_category_most_frequent_first() -> None:
    # Given declined turns on two topics, one without a topic, and some answered turns
    turns = [
        declined("Do you ship to Mars?", "shipping", 1),
        declined("do you  ship to MARS?", "shipping", 2),
        declined("Can I pay in gold?", "payment", 3),
        declined("Do you ship on Sundays?", "shipping", 4),
        declined("Is the CEO single?", "", 5),
        declined("Is the CEO single?", "", 6),
        replace(declined("What is the return window?", "returns", 7), outcome="answered"),
    ]

    gaps = knowledge_gaps(turns)

    # Then the most declined category comes first, and within it the most asked question,
    # told apart regardless of case and spacing
    assert [g["category"] for g in gaps] == ["shipping", "uncategorised", "payment"]
    shipping = gaps[0]
    assert shipping["declined"] == 3
    assert shipping["distinct_questions"] == 2
    assert shipping["questions"] == [
        {"question": "Do you ship to Mars?", "count": 2},
        {"question": "Do you ship on Sundays?", "count": 1},
    ]
    assert gaps[1]["questions"] == [{"question": "Is the CEO single?", "count": 2}]


def test_a_category_lists_at_most_twenty_questions() -> None:
    turns = [declined(f"question {n}", "misc", n % 60) for n in range(30)]
    turns += [declined("question 7", "misc", 59)]

    [misc] = knowledge_gaps(turns)

    assert misc["declined"] == 31
    assert misc["distinct_questions"] == 30
    assert len(misc["questions"]) == QUESTIONS_PER_CATEGORY
    assert misc["questions"][0] == {"question": "question 7", "count": 2}


def test_no_declined_turns_means_no_gaps() -> None:
    assert knowledge_gaps([]) == []


# --- month windows ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(
            datetime(2026, 12, 1, 2, 0, tzinfo=UTC), (NOVEMBER, DECEMBER), id="first of month"
        ),
        pytest.param(
            datetime(2026, 12, 31, 23, 59, tzinfo=UTC), (NOVEMBER, DECEMBER), id="end of month"
        ),
        pytest.param(
            datetime(2027, 1, 1, 2, 0, tzinfo=UTC),
            (DECEMBER, datetime(2027, 1, 1, tzinfo=UTC)),
            id="January",
        ),
        pytest.param(datetime(2026, 12, 1, 2, 0), (NOVEMBER, DECEMBER), id="naive is UTC"),
    ],
)
def test_previous_month(now: datetime, expected: tuple[datetime, datetime]) -> None:
    assert previous_month(now) == expected


def test_previous_month_is_taken_in_utc() -> None:
    # 07:00 on 1 December in Shanghai is still 30 November in UTC
    shanghai = datetime(2026, 12, 1, 7, 0, tzinfo=timezone(timedelta(hours=8)))
    assert previous_month(shanghai) == (datetime(2026, 10, 1, tzinfo=UTC), NOVEMBER)


def test_month_of() -> None:
    assert month_of("2026-11") == (NOVEMBER, DECEMBER)
    assert month_of("2026-12") == (DECEMBER, datetime(2027, 1, 1, tzinfo=UTC))
    assert month_of("2027-01") == (
        datetime(2027, 1, 1, tzinfo=UTC),
        datetime(2027, 2, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "11-2026", "2026-11-01", ""])
def test_month_of_rejects_what_is_not_a_month(text: str) -> None:
    with pytest.raises(ValueError, match="not a month"):
        month_of(text)


# --- the export ---------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_export_month_writes_the_months_examples_and_gaps(tmp_path: Path) -> None:
    # Given tickets closed in November (one opened in October), one closed in October, one
    # opened in November and closed in December, an open one, and declined turns
    store = MemoryTicketStore(
        [
            ticket("tk-nov00001"),
            ticket("tk-nov00002", messages=[message("customer", "在吗", 2)]),  # no agent reply
            ticket("tk-oct00001", created_at=datetime(2026, 10, 31, 23, 30, tzinfo=UTC)),
            ticket("tk-oct00002", created_at=datetime(2026, 10, 30, 9, 0, tzinfo=UTC)),
            ticket("tk-dec00001", created_at=datetime(2026, 11, 30, 23, 30, tzinfo=UTC)),
            ticket("tk-open0001", status="open"),
        ]
    )
    insights = MemoryInsights(
        turns=[
            declined("Do you ship to Mars?", "shipping", 1),
            replace(declined("Old question", "shipping"), at=datetime(2026, 10, 2, tzinfo=UTC)),
        ]
    )

    # When November is exported into a folder
    summary = export_month(
        tickets=store, insights=insights, sink=DirectorySink(tmp_path), start=NOVEMBER, end=DECEMBER
    )

    # Then the tickets closed in November are exported, those answered as examples, and the
    # month's gaps are reported
    assert summary.tickets == 3
    assert summary.examples == 2
    assert summary.training_key == "training/2026-11/handovers.jsonl"
    assert summary.gaps_key == "reports/2026-11/knowledge-gaps.json"
    examples = _read_jsonl(tmp_path / "training" / "2026-11" / "handovers.jsonl")
    assert sorted(e["metadata"]["ticket_id"] for e in examples) == ["tk-nov00001", "tk-oct00001"]
    raw = (tmp_path / "training" / "2026-11" / "handovers.jsonl").read_text(encoding="utf-8")
    assert "退款已在处理中" in raw  # UTF-8, not \u escapes
    gaps = json.loads((tmp_path / "reports" / "2026-11" / "knowledge-gaps.json").read_text())
    assert gaps["since"] == "2026-11-01T00:00:00+00:00"
    assert gaps["until"] == "2026-12-01T00:00:00+00:00"
    assert gaps["turns"] == 1
    assert gaps["declined"] == 1
    assert gaps["categories"][0]["questions"] == [{"question": "Do you ship to Mars?", "count": 1}]
    assert summary.as_dict()["declined"] == 1


def test_export_without_insights_writes_training_data_only(tmp_path: Path) -> None:
    summary = export_month(
        tickets=MemoryTicketStore([ticket()]),
        insights=None,
        sink=DirectorySink(tmp_path),
        start=NOVEMBER,
        end=DECEMBER,
    )

    assert summary.examples == 1
    assert summary.gaps_key is None
    assert not (tmp_path / "reports").exists()


def test_an_empty_month_still_writes_an_empty_file(tmp_path: Path) -> None:
    summary = export_month(
        tickets=MemoryTicketStore(),
        insights=MemoryInsights(),
        sink=DirectorySink(tmp_path),
        start=NOVEMBER,
        end=DECEMBER,
    )

    assert (summary.tickets, summary.examples, summary.declined) == (0, 0, 0)
    assert (tmp_path / summary.training_key).read_bytes() == b""


def test_an_s3_failure_is_a_dependency_failure() -> None:
    from botocore.exceptions import ClientError

    class RefusingS3:
        def put_object(self, **_: Any) -> None:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject")

    with pytest.raises(DependencyUnavailable, match="s3://exports/training/x"):
        S3Sink("exports", client=RefusingS3()).put("training/x", b"", "application/json")


def test_the_cli_exports_a_month_into_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kefu import bootstrap

    monkeypatch.setenv("KEFU_DATA_DIR", str(tmp_path))
    bootstrap.get_settings.cache_clear()
    monkeypatch.setattr(bootstrap, "build_tickets", lambda _: MemoryTicketStore([ticket()]))
    monkeypatch.setattr(
        bootstrap, "build_insights", lambda _: MemoryInsights([declined("Mars?", "shipping", 1)])
    )
    try:
        assert main(["--month", "2026-11"]) == 0
    finally:
        bootstrap.get_settings.cache_clear()

    out = capsys.readouterr().out
    assert "2026-11: 1 training examples from 1 closed tickets" in out
    assert "1 declined questions in 1 categories" in out
    assert len(_read_jsonl(tmp_path / "exports" / "training" / "2026-11" / "handovers.jsonl")) == 1
    assert (tmp_path / "exports" / "reports" / "2026-11" / "knowledge-gaps.json").is_file()


def test_the_cli_rejects_a_bad_month(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--month", "November"])
    assert exit_info.value.code == 2
    assert "not a month" in capsys.readouterr().err
