"""Memory across turns: the window and the rolling summary, the intent and slots carried and
returned, concurrent saves of one session, and a language model resolving follow-ups."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from kefu.adapters.extractive import ExtractiveModel
from kefu.adapters.orders import SampleOrderBook
from kefu.adapters.sessions import SqliteSessionStore
from kefu.chat import ChatService
from kefu.errors import DependencyUnavailable
from kefu.memory import Memory, MemoryPolicy, count_tokens
from kefu.models import ChatRequest, Session, Turn
from kefu.ports import AnswerContext, ModelAnswer, SessionConflict
from kefu.return_flow import reason_in, wants_return
from kefu.text import Language

AT = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


def ask(service: ChatService, message: str, session_id: str | None = None) -> Any:
    return service.handle(ChatRequest(message=message, session_id=session_id))


def build(retriever: Any, **kwargs: Any) -> ChatService:
    options: dict[str, Any] = {
        "model": ExtractiveModel(),
        "sessions": SqliteSessionStore(":memory:"),
        "orders": SampleOrderBook(),
        **kwargs,
    }
    return ChatService(retriever=retriever, clock=lambda: AT, **options)


def test_tokens_are_counted_per_cjk_character_and_per_word() -> None:
    assert count_tokens("退款多久到账？") == 7
    assert count_tokens("How long does a refund take?") == 7
    assert count_tokens("") == 0


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("it doesn't fit", "size"),
        ("尺码偏小，穿不下", "size"),
        ("arrived damaged", "quality"),
        ("质量有问题", "quality"),
        ("you sent the wrong item", "wrong_item"),
        ("不想要了", "changed_mind"),
        ("where is my parcel", None),
    ],
)
def test_a_return_reason_is_recognised(message: str, reason: str | None) -> None:
    assert reason_in(message) == reason


def test_wanting_a_return_is_told_from_asking_about_the_policy() -> None:
    assert wants_return("我想退货")
    assert wants_return("我想 return 一件 jacket")
    assert wants_return("I'd like to return a jacket")
    assert wants_return("can I send it back?")
    assert not wants_return("what is your return policy?")
    assert not wants_return("how do I send it in for repair?")


def test_a_return_is_guided_order_then_reason_then_the_next_step(retriever: Any) -> None:
    service = build(retriever)
    first = ask(service, "I want to return order 20231105-8812")
    assert first.intent == "returns"
    assert first.slots == {"order_id": "20231105-8812", "product": "Down jacket (navy, L)"}
    assert "What is the reason for the return?" in first.answer

    thanks = ask(service, "thanks", first.session_id)
    assert thanks.intent == "returns", "small talk keeps what the customer is trying to do"

    reason = ask(service, "it's too small", first.session_id)
    assert reason.outcome == "answered"
    assert reason.slots["reason"] == "size"
    assert reason.slots["order_id"] == "20231105-8812"
    assert "Next step: open order 20231105-8812 in My Orders" in reason.answer
    assert "Please apply by 2023-11-20." in reason.answer


def test_an_order_that_cannot_be_returned_says_so_and_offers_a_human(retriever: Any) -> None:
    service = build(retriever)
    reply = ask(service, "我想退货，订单 20231101-0935")
    assert reply.language == "zh"
    assert "订单 20231101-0935 目前不能申请退货" in reply.answer
    assert "转人工" in reply.answer


def test_my_parcel_is_the_order_the_conversation_is_about(retriever: Any) -> None:
    service = build(retriever)
    first = ask(service, "订单 20231105-8812 发货了吗")
    later = ask(service, "我的快递现在到哪了？", first.session_id)
    assert later.model == "orders"
    assert "最新物流" in later.answer
    assert later.slots["order_id"] == "20231105-8812"
    # A general question about shipping is still the knowledge base's.
    general = ask(service, "How long does delivery take?", first.session_id)
    assert general.model == "faq"


def test_a_new_intent_keeps_the_order_but_not_the_old_reason(retriever: Any) -> None:
    service = build(retriever)
    first = ask(service, "I want to return order 20231105-8812, it doesn't fit")
    assert first.slots["reason"] == "size"
    refund = ask(service, "How long does a refund take?", first.session_id)
    assert refund.intent == "refunds"
    assert refund.slots == {"order_id": "20231105-8812", "product": "Down jacket (navy, L)"}


def test_a_long_conversation_keeps_a_window_and_a_rolling_summary(retriever: Any) -> None:
    sessions = SqliteSessionStore(":memory:")
    service = build(retriever, sessions=sessions, memory=Memory(MemoryPolicy(budget_tokens=300)))
    reply = ask(service, "How long does delivery take?")
    for _ in range(12):
        reply = ask(service, "How long does a refund take?", reply.session_id)
    stored = sessions.get(reply.session_id)
    assert stored is not None
    assert stored.turn_count == 13
    assert len(stored.turns) < 13
    assert sum(count_tokens(t.message) + count_tokens(t.answer) for t in stored.turns) <= 300
    # The oldest turn left the window for the summary: its question and its answer's gist.
    assert stored.summary.startswith("- How long does delivery take? →")
    assert stored.turns[-1].turn_id == reply.turn_id


class _RacingSessions(SqliteSessionStore):
    """A store where another request of the same session saves just before this one: what it
    saves is `intrude` applied to the session as stored."""

    def __init__(self, intrude: Callable[[Session], Session]) -> None:
        super().__init__(":memory:")
        self.intrude = intrude
        self.raced = False

    def save(self, session: Session) -> None:
        if not self.raced and session.version > 0:
            self.raced = True
            other = self.get(session.session_id)
            assert other is not None
            super().save(self.intrude(other))
        super().save(session)


def _another_turn(other: Session) -> Session:
    intruder = replace(other.turns[-1], turn_id="concurrent", message="concurrent")
    return replace(other, turns=[*other.turns, intruder])


def test_two_messages_of_one_session_at_once_both_stay(retriever: Any) -> None:
    sessions = _RacingSessions(_another_turn)
    service = build(retriever, sessions=sessions)
    first = ask(service, "How long does delivery take?")
    second = ask(service, "How long does a refund take?", first.session_id)
    stored = sessions.get(first.session_id)
    assert stored is not None
    assert [t.turn_id for t in stored.turns] == [first.turn_id, "concurrent", second.turn_id]
    assert stored.version == 3


class _Claude:
    """A language model stand-in: records what it is asked; rewrites follow-ups."""

    name = "claude"

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.contexts: list[AnswerContext] = []
        self.rewrites: list[tuple[str, Sequence[Turn]]] = []
        self.summaries: list[Sequence[Turn]] = []

    def answer(self, context: AnswerContext) -> ModelAnswer:
        if self.fail:
            raise DependencyUnavailable("model down")
        self.contexts.append(context)
        used = (context.hits[0].chunk.id,) if context.hits else ()
        return ModelAnswer(text="From the sources: ...", model=self.name, sources=used)

    def standalone_question(
        self, message: str, history: Sequence[Turn], summary: str, language: Language
    ) -> str:
        self.rewrites.append((message, history))
        if self.fail:
            raise DependencyUnavailable("model down")
        return "How long does a refund take to reach my card?"

    def summarize(self, summary: str, turns: Sequence[Turn], language: Language) -> str:
        self.summaries.append(turns)
        return f"{summary}\nThe customer asked about {len(turns)} things.".strip()


def test_a_model_resolves_a_follow_up_before_retrieval(retriever: Any) -> None:
    claude = _Claude()
    service = build(retriever, model=claude)
    first = ask(service, "How long does a refund take?")
    assert first.model == "faq"
    assert not claude.contexts, "a confident FAQ needs no model"
    follow = ask(service, "and what about to a card?", first.session_id)
    [(message, history)] = claude.rewrites
    assert message == "and what about to a card?"
    assert [t.turn_id for t in history] == [first.turn_id]
    # A follow-up is answered by the model, with the conversation, naming what it used.
    assert follow.model == "claude"
    assert [s.id for s in follow.sources] == ["refund-01-en"]
    assert claude.contexts[-1].facts == {"intent": "refunds"}
    # The model is told when the turn must be answered by (API Gateway's 29 s, less a margin).
    import time

    from kefu.chat import TURN_SECONDS

    deadline = claude.contexts[-1].deadline
    assert deadline is not None
    assert 0 < deadline - time.monotonic() <= TURN_SECONDS


def test_without_the_model_a_follow_up_falls_back_to_the_faq_entry(retriever: Any) -> None:
    claude = _Claude(fail=True)
    service = build(retriever, model=claude)
    first = ask(service, "How long does a refund take?")
    follow = ask(service, "and the refund to a card?", first.session_id)
    assert follow.outcome == "answered"
    assert follow.model == "faq"
    assert follow.sources[0].id == "refund-01-en"


def test_the_model_folds_old_turns_into_the_summary(retriever: Any) -> None:
    claude = _Claude()
    sessions = SqliteSessionStore(":memory:")
    service = build(
        retriever,
        model=claude,
        sessions=sessions,
        memory=Memory(MemoryPolicy(budget_tokens=100), summarizer=claude),
    )
    reply = ask(service, "How long does delivery take?")
    for _ in range(6):
        reply = ask(service, "How long does a refund take?", reply.session_id)
    stored = sessions.get(reply.session_id)
    assert stored is not None
    assert claude.summaries
    assert stored.summary.endswith("things.")


def test_a_card_or_identity_number_is_never_taken_for_an_order(retriever: Any) -> None:
    sessions = SqliteSessionStore(":memory:")
    service = build(retriever, sessions=sessions)
    reply = ask(service, "my card 6222021234567890128 was charged twice")
    assert "order_id" not in reply.slots
    assert "6222021234567890128" not in reply.answer
    stored = sessions.get(reply.session_id)
    assert stored is not None
    assert "6222021234567890128" not in str(stored)


def test_thanks_with_a_reason_in_it_moves_the_return_on(retriever: Any) -> None:
    service = build(retriever)
    first = ask(service, "I want to return order 20231105-8812")
    reason = ask(service, "thanks, it's too small", first.session_id)
    assert reason.slots["reason"] == "size"
    assert "Next step" in reason.answer


def test_another_order_drops_the_old_orders_product(retriever: Any) -> None:
    service = build(retriever)
    first = ask(service, "where is order 20231105-8812?")
    assert first.slots["product"] == "Down jacket (navy, L)"
    other = ask(service, "and where is order 20231101-0935?", first.session_id)
    assert other.slots == {"order_id": "20231101-0935", "product": "Ceramic mug set"}


def test_a_retried_save_keeps_what_the_other_request_established(retriever: Any) -> None:
    sessions = _RacingSessions(
        lambda other: replace(other, slots={"order_id": "20231105-8812"}, intent="shipping")
    )
    service = build(retriever, sessions=sessions)
    first = ask(service, "How long does delivery take?")
    ask(service, "thanks", first.session_id)
    stored = sessions.get(first.session_id)
    assert stored is not None
    assert stored.slots == {"order_id": "20231105-8812"}
    assert stored.intent == "shipping"


class _TimedOutSessions(SqliteSessionStore):
    """A save that lands, but whose caller hears a conflict (a retried write after a timeout)."""

    def save(self, session: Session) -> None:
        super().save(session)
        if session.version > 0:
            raise SessionConflict(session.session_id)


def test_a_save_that_landed_before_its_retry_conflicted_is_not_stored_twice(
    retriever: Any,
) -> None:
    sessions = _TimedOutSessions(":memory:")
    service = build(retriever, sessions=sessions)
    first = ask(service, "How long does delivery take?")
    second = ask(service, "How long does a refund take?", first.session_id)
    stored = sessions.get(first.session_id)
    assert stored is not None
    assert [t.turn_id for t in stored.turns] == [first.turn_id, second.turn_id]
