"""Hand-over to humans in the chat turn: the triggers, the ticket written before it is queued,
the bot standing aside while a human answers, and the way back to the bot."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kefu.adapters.extractive import ExtractiveModel
from kefu.adapters.sessions import SqliteSessionStore
from kefu.adapters.tickets import SqliteTicketStore
from kefu.chat import ChatService
from kefu.errors import DependencyUnavailable, SessionNotFound, TicketClosed
from kefu.handover import HandoverDesk, complaint_kind
from kefu.models import ChatRequest, FeedbackRequest
from kefu.ports import AnswerContext, ModelAnswer
from kefu.replies import HUMAN_WILL_REPLY
from kefu.tickets import HandoverMessage, Ticket


@dataclass
class Queue:
    """An escalation queue that fails its first `failures` sends."""

    failures: int = 0
    sent: list[str] = field(default_factory=list)

    def send(self, body: str) -> str:
        if self.failures:
            self.failures -= 1
            raise DependencyUnavailable("queue down")
        self.sent.append(body)
        return str(len(self.sent))


@dataclass
class Channel:
    name: str
    down: bool = False
    told: list[str] = field(default_factory=list)

    def notify(self, ticket: Ticket) -> None:
        if self.down:
            raise DependencyUnavailable(f"{self.name} down")
        self.told.append(ticket.ticket_id)


class BrokenModel:
    name = "broken"

    def answer(self, context: AnswerContext) -> ModelAnswer:
        raise DependencyUnavailable("model throttled")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class FlakyTickets(SqliteTicketStore):
    """A ticket store whose reads and writes fail while `down`."""

    down = False

    def get(self, ticket_id: str) -> Ticket | None:
        if self.down:
            raise DependencyUnavailable("tickets down")
        return super().get(ticket_id)

    def create(self, ticket: Ticket) -> bool:
        if self.down:
            raise DependencyUnavailable("tickets down")
        return super().create(ticket)


@pytest.fixture
def queue() -> Queue:
    return Queue()


@pytest.fixture
def desk(queue: Queue) -> HandoverDesk:
    """A desk whose ticket store can be taken down (`desk.tickets.down = True`)."""
    return HandoverDesk(
        tickets=FlakyTickets(":memory:"),
        queue=queue,
        sessions=SqliteSessionStore(":memory:"),
        pause=lambda _: None,
    )


def service(retriever: Any, desk: HandoverDesk, **kwargs: Any) -> ChatService:
    return ChatService(
        retriever=retriever,
        model=kwargs.pop("model", ExtractiveModel()),
        sessions=desk.sessions,
        desk=desk,
        **kwargs,
    )


def ask(chat: ChatService, message: str, session_id: str | None = None) -> Any:
    return chat.handle(ChatRequest(message=message, session_id=session_id))


def test_asking_for_a_human_writes_a_ticket_then_queues_it(
    retriever: Any, desk: HandoverDesk, queue: Queue
) -> None:
    chat = service(retriever, desk)
    reply = ask(chat, "转人工")
    assert reply.outcome == "handed_over"
    assert reply.handover is not None
    assert reply.handover.trigger == "customer_request"
    ticket = desk.tickets.get(reply.handover.ticket_id)
    assert ticket is not None
    assert ticket.status == "pending"
    assert [json.loads(body)["ticket_id"] for body in queue.sent] == [ticket.ticket_id]
    session = desk.sessions.get(reply.session_id)
    assert session is not None
    assert session.handed_over
    assert session.ticket_id == ticket.ticket_id


def test_while_a_human_has_the_conversation_the_bot_passes_messages_on(
    retriever: Any, desk: HandoverDesk
) -> None:
    chat = service(retriever, desk)
    first = ask(chat, "I want to talk to a real person")
    # A question the bot could answer: the human has the conversation now.
    reply = ask(chat, "How long does a refund take? My phone is 13812345678", first.session_id)
    assert reply.outcome == "handed_over"
    assert reply.answer == HUMAN_WILL_REPLY["en"]
    assert reply.sources == []
    ticket = desk.tickets.get(first.handover.ticket_id)
    assert ticket is not None
    assert [m.author for m in ticket.messages] == ["customer"]
    assert "13812345678" not in ticket.messages[0].text
    assert "refund" in ticket.messages[0].text


def test_closing_the_ticket_gives_the_conversation_back_to_the_bot(
    retriever: Any, desk: HandoverDesk
) -> None:
    chat = service(retriever, desk)
    first = ask(chat, "转人工")
    ticket_id = first.handover.ticket_id
    desk.reply(ticket_id, "您好，我来帮您处理。", "Li")
    desk.close(ticket_id)
    with pytest.raises(TicketClosed):
        desk.reply(ticket_id, "one more thing")
    reply = ask(chat, "How long does a refund take?", first.session_id)
    assert reply.outcome == "answered"
    assert reply.handover is None
    assert reply.sources[0].id == "refund-01-en"


def test_two_declined_turns_in_a_row_hand_over(retriever: Any, desk: HandoverDesk) -> None:
    chat = service(retriever, desk)
    first = ask(chat, "Write me a poem about the sea")
    assert first.outcome == "declined"
    assert first.handover is None
    ask(chat, "thanks", first.session_id)  # small talk neither counts nor breaks the run
    second = ask(chat, "What is the capital of Peru?", first.session_id)
    assert second.outcome == "handed_over"
    assert second.handover.trigger == "repeated_failure"


def test_an_answer_in_between_breaks_the_run(retriever: Any, desk: HandoverDesk) -> None:
    chat = service(retriever, desk)
    first = ask(chat, "Write me a poem about the sea")
    ask(chat, "How long does a refund take?", first.session_id)
    third = ask(chat, "What is the capital of Peru?", first.session_id)
    assert third.outcome == "declined"


def test_the_number_of_failures_is_configurable(retriever: Any, desk: HandoverDesk) -> None:
    chat = service(retriever, desk, handover_after_failures=1)
    reply = ask(chat, "Write me a poem about the sea")
    assert reply.handover.trigger == "repeated_failure"


@pytest.mark.parametrize(
    ("message", "priority"),
    [
        ("我要投诉你们的快递", "high"),
        ("I want to make a complaint about my delivery", "high"),
        ("再不退款我就去消协起诉你们", "urgent"),
        ("I'll see you in small claims court if this is not refunded", "urgent"),
        ("Refund me or I will take you to court", "urgent"),
        ("I'm going to file a chargeback with my bank", "urgent"),
        ("I will sue you", "urgent"),
    ],
)
def test_a_complaint_or_a_legal_threat_hands_over_with_its_priority(
    retriever: Any, desk: HandoverDesk, message: str, priority: str
) -> None:
    reply = ask(service(retriever, desk), message)
    assert reply.outcome == "handed_over"
    assert reply.handover.trigger == "complaint"
    ticket = desk.tickets.get(reply.handover.ticket_id)
    assert ticket is not None
    assert ticket.priority == priority


@pytest.mark.parametrize(
    "message",
    [
        "Can I use these shoes on a tennis court?",
        "Does the pressure regulator fit the X200?",
        "How do I avoid a chargeback when I pay by card?",
        "My name is Sue, where is my order?",
        "order 202412315678, where is it?",
        "怎么申请退款？",
    ],
)
def test_the_law_s_words_outside_a_threat_are_not_a_complaint(message: str) -> None:
    assert complaint_kind(message) is None


def test_frustration_alone_is_offered_a_human_not_handed_over(
    retriever: Any, desk: HandoverDesk
) -> None:
    assert complaint_kind("this is ridiculous, how long does a refund take") is None
    reply = ask(service(retriever, desk), "this is ridiculous, how long does a refund take")
    assert reply.outcome == "answered"
    assert reply.handover is None


def test_a_model_failure_with_no_fallback_hands_over(retriever: Any, desk: HandoverDesk) -> None:
    chat = service(retriever, desk, model=BrokenModel())
    # A passage, not an FAQ entry, answers this: only the model could have written it.
    reply = ask(chat, "Which damage is not covered by the warranty?")
    assert reply.outcome == "handed_over"
    assert reply.handover.trigger == "model_failure"


def test_a_rating_below_3_hands_over_and_a_good_one_does_not(
    retriever: Any, desk: HandoverDesk
) -> None:
    chat = service(retriever, desk)
    first = ask(chat, "How long does a refund take?")
    good = chat.feedback(FeedbackRequest(session_id=first.session_id, rating=5))
    assert good.handover is None
    bad = chat.feedback(
        FeedbackRequest(
            session_id=first.session_id,
            turn_id=first.turn_id,
            rating=2,
            comment="not helpful, call me on 13812345678",
        )
    )
    assert bad.handover is not None
    assert bad.handover.trigger == "low_rating"
    ticket = desk.tickets.get(bad.handover.ticket_id)
    assert ticket is not None
    assert ticket.priority == "high"
    session = desk.sessions.get(first.session_id)
    assert session is not None
    assert session.handed_over
    assert session.escalated


def test_rating_an_unknown_session_is_refused(retriever: Any, desk: HandoverDesk) -> None:
    with pytest.raises(SessionNotFound):
        service(retriever, desk).feedback(FeedbackRequest(session_id="no-such-session", rating=1))


def test_a_queue_that_stays_down_leaves_the_ticket_to_the_sweeper(
    retriever: Any, desk: HandoverDesk, queue: Queue
) -> None:
    queue.failures = 3
    reply = ask(service(retriever, desk), "转人工")
    ticket = desk.tickets.get(reply.handover.ticket_id)
    assert ticket is not None
    assert ticket.needs_sweep
    assert queue.sent == []
    assert desk.sweep(older_than=timedelta(minutes=5)) == [ticket.ticket_id]
    swept = desk.tickets.get(ticket.ticket_id)
    assert swept is not None
    assert not swept.needs_sweep
    assert len(queue.sent) == 1


def test_a_send_that_fails_once_is_retried(
    retriever: Any, desk: HandoverDesk, queue: Queue
) -> None:
    queue.failures = 2
    reply = ask(service(retriever, desk), "转人工")
    ticket = desk.tickets.get(reply.handover.ticket_id)
    assert ticket is not None
    assert not ticket.needs_sweep
    assert len(queue.sent) == 1


def test_the_sweeper_leaves_recent_and_completed_tickets_alone(
    retriever: Any, desk: HandoverDesk, queue: Queue
) -> None:
    reply = ask(service(retriever, desk), "转人工")
    assert desk.sweep(older_than=timedelta(minutes=5)) == []
    desk.complete(HandoverMessage.model_validate_json(queue.sent[0]))
    assert desk.sweep(older_than=timedelta(seconds=0)) == []
    assert desk.tickets.get(reply.handover.ticket_id).status == "open"


def test_completing_fills_the_ticket_from_the_session_once(
    retriever: Any, desk: HandoverDesk, queue: Queue
) -> None:
    chat = service(retriever, desk)
    first = ask(chat, "How long does a refund take? my email is li@example.com")
    handed = ask(chat, "转人工", first.session_id)
    message = HandoverMessage.model_validate_json(queue.sent[0])
    ticket = desk.complete(message)
    again = desk.complete(message)
    assert ticket.status == "open"
    assert again.version == ticket.version
    assert [m.author for m in ticket.transcript] == ["customer", "bot", "customer", "bot"]
    assert "li@example.com" not in json.dumps([m.text for m in ticket.transcript])
    assert ticket.sources[0] == "refund-01-en"
    assert ticket.intent == "refunds"
    assert ticket.ticket_id == handed.handover.ticket_id


def test_a_ticket_the_store_could_not_write_is_written_from_the_queue(
    desk: HandoverDesk,
) -> None:
    message = HandoverMessage(
        ticket_id="t" * 32,
        session_id="s" * 32,
        trigger="customer_request",
        language="en",
        created_at=datetime(2026, 12, 7, tzinfo=UTC),
        message="I want a human",
    )
    ticket = desk.complete(message)
    assert ticket.status == "open"
    assert [m.text for m in ticket.transcript] == ["I want a human"]
    assert len(desk.tickets.by_status("open")) == 1


def test_each_channel_is_told_once_and_a_failed_one_again(
    retriever: Any, desk: HandoverDesk, queue: Queue
) -> None:
    ask(service(retriever, desk), "转人工")
    ticket = desk.complete(HandoverMessage.model_validate_json(queue.sent[0]))
    sns, webhook = Channel("sns"), Channel("webhook", down=True)
    with pytest.raises(DependencyUnavailable):
        desk.announce(ticket, [sns, webhook])
    webhook.down = False
    stored = desk.tickets.get(ticket.ticket_id)
    assert stored is not None
    desk.announce(stored, [sns, webhook])
    assert sns.told == [ticket.ticket_id]
    assert webhook.told == [ticket.ticket_id]
    assert desk.tickets.get(ticket.ticket_id).notified == ["sns", "webhook"]


def test_a_message_the_ticket_store_cannot_take_goes_by_the_queue_and_joins_the_ticket(
    retriever: Any, desk: HandoverDesk, queue: Queue
) -> None:
    # Given a conversation a human has
    chat = service(retriever, desk)
    first = ask(chat, "I want to talk to a real person")
    desk.complete(HandoverMessage.model_validate_json(queue.sent[0]))

    # When the customer writes while the ticket store is down
    assert isinstance(desk.tickets, FlakyTickets)
    desk.tickets.down = True
    reply = ask(chat, "Are you there? Order 20231105-8812", first.session_id)

    # Then the customer is still told a human will reply, and the message is queued
    assert reply.outcome == "handed_over"
    assert reply.answer == HUMAN_WILL_REPLY["en"]
    forwarded = HandoverMessage.model_validate_json(queue.sent[-1])
    assert (forwarded.kind, forwarded.turn_id) == ("message", reply.turn_id)

    # and once the store is back the escalation function appends it, once however often
    # the queue delivers it
    desk.tickets.down = False
    desk.deliver(forwarded)
    ticket = desk.deliver(forwarded)
    assert [m.text for m in ticket.messages] == ["Are you there? Order 20231105-8812"]
    assert ticket.messages[0].message_id == f"{reply.turn_id}-q"
    # and the session still belongs to the human
    session = desk.sessions.get(first.session_id)
    assert session is not None
    assert session.handed_over


def test_a_message_before_the_ticket_is_written_waits_for_it(
    retriever: Any, desk: HandoverDesk, queue: Queue
) -> None:
    # Given a hand-over whose ticket the store could not write (the queue carries it)
    assert isinstance(desk.tickets, FlakyTickets)
    desk.tickets.down = True
    chat = service(retriever, desk)
    first = ask(chat, "转人工")
    desk.tickets.down = False
    assert desk.tickets.get(first.handover.ticket_id) is None

    # When the customer writes again before the escalation function has run
    reply = ask(chat, "还在吗？", first.session_id)

    # Then the bot does not take the conversation back: the message is queued
    assert reply.outcome == "handed_over"
    handover, forwarded = (HandoverMessage.model_validate_json(b) for b in queue.sent)
    assert forwarded.kind == "message"
    # and delivering it first fails, so the queue brings it back after the hand-over
    with pytest.raises(DependencyUnavailable):
        desk.deliver(forwarded)
    desk.complete(handover)
    ticket = desk.deliver(forwarded)
    # once: in the thread after the hand-over, not in the transcript before it too
    assert [m.text for m in ticket.messages] == ["还在吗？"]
    assert [m.text for m in ticket.transcript if m.author == "customer"] == ["转人工"]
    session = desk.sessions.get(first.session_id)
    assert session is not None
    assert session.ticket_id == first.handover.ticket_id


def test_a_closed_ticket_takes_no_more_messages(retriever: Any, desk: HandoverDesk) -> None:
    chat = service(retriever, desk)
    first = ask(chat, "转人工")
    desk.close(first.handover.ticket_id)
    ticket = desk.add_customer_message(first.handover.ticket_id, "one more thing", "turn-2")
    assert ticket is not None
    assert ticket.status == "closed"
    assert ticket.messages == []


def test_a_forwarded_message_must_name_its_turn() -> None:
    with pytest.raises(ValueError, match="turn id"):
        HandoverMessage(
            kind="message",
            ticket_id="t" * 32,
            session_id="s" * 32,
            language="en",
            created_at=datetime(2026, 12, 7, tzinfo=UTC),
            message="hi",
        )
    with pytest.raises(ValueError, match="trigger"):
        HandoverMessage(
            ticket_id="t" * 32,
            session_id="s" * 32,
            language="en",
            created_at=datetime(2026, 12, 7, tzinfo=UTC),
        )


def test_a_low_rating_while_a_human_has_it_joins_that_ticket(
    retriever: Any, desk: HandoverDesk
) -> None:
    chat = service(retriever, desk)
    first = ask(chat, "转人工")
    rated = chat.feedback(
        FeedbackRequest(session_id=first.session_id, rating=1, comment="太慢了 13812345678")
    )
    # The same ticket, no second one, and the agent sees the rating and its masked comment
    assert rated.handover is not None
    assert rated.handover.ticket_id == first.handover.ticket_id
    assert len(desk.tickets.by_status("pending")) == 1
    ticket = desk.tickets.get(first.handover.ticket_id)
    assert ticket is not None
    assert [m.text[:5] for m in ticket.messages] == ["[1/5]"]
    assert "太慢了" in ticket.messages[0].text
    assert "13812345678" not in ticket.messages[0].text


def test_each_turn_is_recorded_and_a_declined_question_with_its_nearest_category(
    retriever: Any, desk: HandoverDesk
) -> None:
    from kefu.adapters.insights import SqliteInsights

    insights = SqliteInsights(":memory:")
    chat = service(retriever, desk, insights=insights)
    answered = ask(chat, "How long does a refund take?")
    # a conversation's first question, so no conversation topic to fall back on
    declined = ask(chat, "Can my refund be paid in bitcoin?")
    assert declined.outcome == "declined"
    handed = ask(chat, "转人工", answered.session_id)

    since = datetime(2000, 1, 1, tzinfo=UTC)
    records = insights.turns(since, datetime.now(UTC) + timedelta(days=1))
    by_turn = {record.turn_id: record for record in records}
    assert set(by_turn) == {answered.turn_id, declined.turn_id, handed.turn_id}
    assert by_turn[answered.turn_id].first_turn
    assert by_turn[answered.turn_id].question == ""  # an answered question is not kept
    gap = by_turn[declined.turn_id]
    assert (gap.question, gap.category) == ("Can my refund be paid in bitcoin?", "refunds")
    assert by_turn[handed.turn_id].handover_trigger == "customer_request"


def test_two_messages_handing_over_at_once_make_one_ticket(
    retriever: Any, desk: HandoverDesk, queue: Queue
) -> None:
    from kefu.models import Session

    chat = service(retriever, desk)
    first = ask(chat, "How long does a refund take?")
    sessions = desk.sessions
    racing: list[Any] = []
    raced = False

    class RacingSessions:
        """Before the first save, another message of the session hands over and saves."""

        def get(self, session_id: str) -> Session | None:
            return sessions.get(session_id)

        def save(self, session: Session) -> None:
            nonlocal raced
            if not raced:
                raced = True
                racing.append(ask(chat, "I want to make a complaint", first.session_id))
            sessions.save(session)

    chat.sessions = RacingSessions()  # type: ignore[assignment]
    reply = ask(chat, "转人工", first.session_id)
    [other] = racing

    # Both are handed over, to the ticket that was saved first
    assert other.handover.trigger == "complaint"
    assert reply.handover.ticket_id == other.handover.ticket_id
    kept = desk.tickets.get(other.handover.ticket_id)
    assert kept is not None
    assert [m.text for m in kept.messages] == ["转人工"]
    # the other ticket was never queued, and is closed
    queued = [HandoverMessage.model_validate_json(body).ticket_id for body in queue.sent]
    assert queued == [kept.ticket_id]
    assert len(desk.tickets.by_status("closed")) == 1
    session = sessions.get(first.session_id)
    assert session is not None
    assert session.ticket_id == kept.ticket_id
    assert len(session.turns) == 3


def test_a_message_while_the_ticket_is_pending_is_in_its_thread_once(
    retriever: Any, desk: HandoverDesk, queue: Queue
) -> None:
    chat = service(retriever, desk)
    first = ask(chat, "How long does a refund take?")
    ask(chat, "转人工", first.session_id)
    ask(chat, "我的订单号是 20231105-8812", first.session_id)  # before the escalation function ran
    ticket = desk.complete(HandoverMessage.model_validate_json(queue.sent[0]))
    customer = [m.text for m in ticket.transcript if m.author == "customer"]
    assert customer == ["How long does a refund take?", "转人工"]
    assert [m.text for m in ticket.messages] == ["我的订单号是 20231105-8812"]


def test_a_hand_over_whose_ticket_was_never_written_gives_the_bot_back_after_an_hour(
    retriever: Any, desk: HandoverDesk, queue: Queue
) -> None:
    # Given a hand-over that neither the ticket store nor the queue took
    clock = Clock()
    desk.clock = clock
    chat = service(retriever, desk, clock=clock)
    assert isinstance(desk.tickets, FlakyTickets)
    desk.tickets.down = True
    queue.failures = 3
    first = ask(chat, "转人工")
    desk.tickets.down = False

    # Within the hour the customer's messages wait for the ticket
    clock.now += timedelta(minutes=30)
    waiting = ask(chat, "还在吗？", first.session_id)
    assert waiting.outcome == "handed_over"

    # After it, the bot answers again rather than leave the customer with no one
    clock.now += timedelta(hours=1)
    reply = ask(chat, "How long does a refund take?", first.session_id)
    assert reply.outcome == "answered"
    session = desk.sessions.get(first.session_id)
    assert session is not None
    assert not session.handed_over


def test_a_merge_into_a_closed_ticket_leaves_the_new_hand_over_to_be_queued(
    retriever: Any, desk: HandoverDesk
) -> None:
    chat = service(retriever, desk)
    old = ask(chat, "转人工")
    desk.close(old.handover.ticket_id)
    new = desk.open(session_id=old.session_id, trigger="complaint", language="zh", message="投诉")
    assert desk.merge(new, into=old.handover.ticket_id, message="投诉", turn_id="turn-9") is None
    assert desk.tickets.get(new.ticket_id).status == "pending"  # not closed: it is the real one


def test_a_low_rating_sent_twice_joins_the_ticket_once(retriever: Any, desk: HandoverDesk) -> None:
    chat = service(retriever, desk)
    first = ask(chat, "转人工")
    rating = FeedbackRequest(session_id=first.session_id, turn_id=first.turn_id, rating=2)
    chat.feedback(rating)
    chat.feedback(rating)  # a client's retry
    ticket = desk.tickets.get(first.handover.ticket_id)
    assert ticket is not None
    assert [m.text for m in ticket.messages] == ["[2/5]"]
