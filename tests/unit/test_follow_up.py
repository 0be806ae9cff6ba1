"""Follow-ups without a model: a short continuation is retrieved within the conversation's topic."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kefu.chat import ChatService
from kefu.follow_up import follow_up_of
from kefu.models import ChatRequest, Turn

AT = datetime(2026, 1, 1, tzinfo=UTC)


def turn(intent: str, outcome: str = "answered") -> Turn:
    return Turn(
        turn_id="t",
        message="m",
        answer="a",
        language="zh",
        outcome=outcome,  # type: ignore[arg-type]
        intent=intent,
        at=AT,
    )


@pytest.mark.parametrize(
    ("message", "history", "topic"),
    [
        ("那运费呢？", [turn("returns")], "returns"),
        ("还有多久到账", [turn("refunds")], "refunds"),
        ("and the shipping cost?", [turn("returns")], "returns"),
        ("What about the red one?", [turn("products")], "products"),
        ("那运费呢？", [], None),  # nothing to follow up
        ("那运费呢？", [turn("unknown", "declined")], None),  # nothing was answered
        ("那运费呢？", [turn("returns"), turn("small_talk")], "returns"),  # the last answered topic
        ("运费怎么算？", [turn("returns")], None),  # a question of its own
        ("do they run out at some point?", [turn("account")], "account"),  # a pronoun
        ("what if the sole is coming off?", [turn("returns")], "returns"),
        ("如果当初是信用卡付的呢？", [turn("refunds")], "refunds"),
        (
            "and could you also tell me how the loyalty points on my account are calculated?",
            [turn("returns")],
            None,
        ),
    ],
)
def test_a_short_continuation_follows_up_the_last_answered_topic(
    message: str, history: list[Turn], topic: str | None
) -> None:
    found = follow_up_of(message, history)
    assert (found.topic if found else None) == topic


def test_a_follow_up_is_answered_within_the_conversations_topic(
    chat_service: ChatService,
) -> None:
    first = chat_service.handle(ChatRequest(message="How long does a refund take?"))
    assert first.sources[0].id == "refund-01-en"

    follow = chat_service.handle(
        ChatRequest(message="and how long does that take?", session_id=first.session_id)
    )
    fresh = chat_service.handle(ChatRequest(message="and how long does that take?"))

    assert follow.outcome == "answered"
    assert follow.sources[0].id == "refund-01-en"
    assert not fresh.sources or fresh.sources[0].id != "refund-01-en"


def test_a_follow_up_carries_the_question_it_follows() -> None:
    found = follow_up_of("如果当初是信用卡付的呢？", [turn("refunds")])
    assert found is not None
    assert (found.topic, found.previous) == ("refunds", "m")


class _Recorder:
    """An index that records the queries it is asked and finds nothing."""

    version = "1"

    def __init__(self) -> None:
        self.queries: list[tuple[str, str | None]] = []

    def search(self, query: object) -> list[object]:
        self.queries.append((query.text, query.category))  # type: ignore[attr-defined]
        return []

    def load_head(self, tenant: str) -> None:
        return None


def _retriever(index: _Recorder) -> Any:
    """A retriever over `index`, with the hashing embedder."""
    from kefu.adapters.embedders import HashingEmbedder
    from kefu.decision import Thresholds
    from kefu.retrieval import Retriever

    return Retriever(
        embedder=HashingEmbedder(),
        index=index,  # type: ignore[arg-type]
        thresholds=Thresholds(fit=0.4, head=0.58, similarity=0.4, passage=0.3),
    )


def test_a_follow_up_is_read_alone_then_after_its_question_then_across_the_kb() -> None:
    index = _Recorder()
    retriever = _retriever(index)
    decision = retriever.decide(
        "如果当初是信用卡付的呢？",
        language="zh",
        tenant="default",
        topic="refunds",
        previous="几天能拿到退款",
    )
    assert decision.kind == "decline"
    assert index.queries == [
        ("如果当初是信用卡付的呢？", "refunds"),
        ("几天能拿到退款\n如果当初是信用卡付的呢？", "refunds"),
        ("如果当初是信用卡付的呢？", None),
    ]


def test_a_long_question_followed_keeps_its_end_and_the_whole_follow_up() -> None:
    from kefu.retrieval import FOLLOWED_CHARS

    index = _Recorder()
    retriever = _retriever(index)
    previous = "我上周买的东西" * 300 + "几天能拿到退款"

    retriever.decide(
        "如果当初是信用卡付的呢？",
        language="zh",
        tenant="default",
        topic="refunds",
        previous=previous,
    )

    joined = index.queries[1][0]
    assert joined == f"{previous[-FOLLOWED_CHARS:]}\n如果当初是信用卡付的呢？"
    assert "几天能拿到退款\n如果当初是信用卡付的呢？" in joined
