"""What `make load`'s customers write (`local.load.QuestionMix`)."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from kb_ingest import faq_questions
from kefu.text import Language, detect_language
from local.load import FOLLOW_UP_SHARE, KIND_SHARES, KINDS, Ask, QuestionMix, sample_order_ids

SESSIONS = 100
TURNS = 20


@pytest.fixture(scope="module")
def kb_questions() -> list[tuple[str, Language]]:
    return list(faq_questions())


def _conversations(kb_questions: list[tuple[str, Language]], seed: int) -> list[list[Ask]]:
    mix = QuestionMix(kb_questions, seed=seed, order_ids=sample_order_ids())
    return [mix.conversation(number, TURNS) for number in range(SESSIONS)]


def test_the_same_seed_draws_the_same_conversations(
    kb_questions: list[tuple[str, Language]],
) -> None:
    first = _conversations(kb_questions, seed=7)
    assert _conversations(kb_questions, seed=7) == first
    assert _conversations(kb_questions, seed=8) != first
    # A conversation is the same however many others are drawn
    assert (
        QuestionMix(kb_questions, seed=7, order_ids=sample_order_ids()).conversation(42, TURNS)
        == first[42]
    )


def test_customers_write_chinese_english_and_the_two_mixed(
    kb_questions: list[tuple[str, Language]],
) -> None:
    asks = [ask for conversation in _conversations(kb_questions, seed=7) for ask in conversation]
    tongues = Counter(ask.tongue for ask in asks)
    assert set(tongues) == {"zh", "en", "mixed"}
    assert Counter(detect_language(ask.text) for ask in asks).keys() == {"zh", "en"}
    # A customer keeps to one language
    for conversation in _conversations(kb_questions, seed=7):
        assert len({ask.tongue for ask in conversation}) == 1


def test_popular_kb_questions_repeat_and_new_ones_are_not_in_the_kb(
    kb_questions: list[tuple[str, Language]],
) -> None:
    asks = [ask for conversation in _conversations(kb_questions, seed=7) for ask in conversation]
    known = {question for question, _ in kb_questions}
    from_kb = Counter(ask.text for ask in asks if ask.kind == "faq")
    assert set(from_kb) <= known
    assert from_kb.most_common(1)[0][1] >= 20  # the head of the Zipf curve, asked again and again
    assert sum(count > 1 for count in from_kb.values()) >= 50
    assert sum(count == 1 for count in from_kb.values()) >= 100  # and its long tail, once
    new = [ask.text for ask in asks if ask.kind == "new"]
    assert new
    assert not set(new) & known


def test_the_kinds_of_message_come_in_their_shares(
    kb_questions: list[tuple[str, Language]],
) -> None:
    conversations = _conversations(kb_questions, seed=7)
    kinds = Counter(ask.kind for conversation in conversations for ask in conversation)
    assert set(kinds) == set(KINDS)
    standalone = sum(count for kind, count in kinds.items() if kind != "follow_up")
    for kind, share in KIND_SHARES.items():
        assert abs(kinds[kind] / standalone - share) <= 0.03, (kind, kinds[kind] / standalone)
    # A follow-up always follows a KB question, in its share of the messages after one
    pairs = [pair for conversation in conversations for pair in itertools.pairwise(conversation)]
    assert all(before.kind == "faq" for before, ask in pairs if ask.kind == "follow_up")
    after_kb = [ask for before, ask in pairs if before.kind == "faq"]
    followed = sum(ask.kind == "follow_up" for ask in after_kb) / len(after_kb)
    assert abs(followed - FOLLOW_UP_SHARE) <= 0.03
    assert all(conversation[0].kind != "follow_up" for conversation in conversations)
    # An order question names an order of the sample order book (or now and then none of it)
    orders = [ask.text for c in conversations for ask in c if ask.kind == "order"]
    assert any(order_id in text for text in orders for order_id in sample_order_ids())
