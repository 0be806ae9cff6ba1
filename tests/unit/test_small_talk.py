"""Small talk and upset customers: recognised by rules, answered in the customer's language."""

from __future__ import annotations

from typing import Any

import pytest

from kefu.chat import ChatService
from kefu.models import ChatRequest
from kefu.replies import AI_DISCLOSURE, DECLINE, HANDOVER
from kefu.small_talk import APOLOGY, HUMAN_OFFER, REPLIES, small_talk, sounds_upset


def ask(service: ChatService, message: str, **kwargs: Any) -> Any:
    return service.handle(ChatRequest(message=message, **kwargs))


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Hi!", "greeting"),
        ("hello there 👋", "greeting"),
        ("Good morning", "greeting"),
        ("你好", "greeting"),
        ("您好，在吗？", "greeting"),
        ("Thanks a lot!", "thanks"),
        ("thank you so much for your help", "thanks"),
        ("谢谢！", "thanks"),
        ("多谢了", "thanks"),
        ("bye", "goodbye"),
        ("Have a nice day", "goodbye"),
        ("再见", "goodbye"),
        ("好的，拜拜", "goodbye"),
        ("Are you a bot?", "identity"),
        ("are you a real person", "identity"),
        ("Who are you?", "identity"),
        ("am I talking to a human?", "identity"),
        ("你是机器人吗？", "identity"),
        ("你是真人吗", "identity"),
        ("你是谁", "identity"),
        ("你是机器人还是真人？", "identity"),
        ("what's your phone number?", "contact"),
        ("How can I contact you?", "contact"),
        ("你们客服电话是多少？", "contact"),
        ("怎么联系你们", "contact"),
        ("ok thanks, goodbye", "goodbye"),
        ("great, bye", "goodbye"),
        ("明白了，谢谢", "thanks"),
        ("那我再核对一下订单号，谢谢", "thanks"),
        ("thanks, I'll check the lockers downstairs", "thanks"),
    ],
)
def test_small_talk_is_recognised_in_either_language(message: str, kind: str) -> None:
    assert small_talk(message) == kind


@pytest.mark.parametrize(
    "message",
    [
        "hi, where is my refund?",
        "Hello, I want to return a jacket",
        "thanks to a coupon I paid less, can I still return it?",
        "你好，我想退货",
        "谢谢，另外发票怎么开？",
        "How do I say goodbye to my old account and delete it?",
        "你是怎么计算运费的",
        "How do I change my phone number?",
        "thanks, but where is my refund?",
        "谢谢，那运费谁出",
        "我的手机号换了怎么办",
        "",
    ],
)
def test_a_question_that_opens_with_a_greeting_is_not_small_talk(message: str) -> None:
    assert small_talk(message) is None


def test_a_greeting_is_answered_by_rules_not_declined(chat_service: ChatService) -> None:
    reply = ask(chat_service, "你好")

    assert reply.outcome == "answered"
    assert reply.model == "rules"
    assert reply.intent == "small_talk"
    assert reply.language == "zh"
    assert reply.answer == f"{AI_DISCLOSURE['zh']}\n\n{REPLIES['greeting']['zh']}"
    assert reply.sources == []


def test_thanks_and_goodbye_later_in_a_conversation_get_short_answers(
    chat_service: ChatService,
) -> None:
    first = ask(chat_service, "How long does a refund take?")

    thanks = ask(chat_service, "Thanks!", session_id=first.session_id)
    bye = ask(chat_service, "bye", session_id=first.session_id)

    assert thanks.answer == REPLIES["thanks"]["en"]
    assert bye.answer == REPLIES["goodbye"]["en"]


def test_asking_whether_it_is_a_person_is_answered_not_handed_over(
    chat_service: ChatService,
) -> None:
    zh = ask(chat_service, "你是真人吗？")
    en = ask(chat_service, "Are you a human?")

    for reply, language in ((zh, "zh"), (en, "en")):
        assert reply.outcome == "answered"
        assert reply.answer.endswith(REPLIES["identity"][language])
    assert "AI" in REPLIES["identity"]["zh"]
    assert "AI" in REPLIES["identity"]["en"]


def test_asking_for_a_person_still_hands_over(chat_service: ChatService) -> None:
    reply = ask(chat_service, "I want to talk to a real person")

    assert reply.outcome == "handed_over"
    assert reply.answer.endswith(HANDOVER["en"])


@pytest.mark.parametrize(
    ("message", "upset"),
    [
        ("This is ridiculous, my refund still hasn't arrived", True),
        ("你们服务太差了，我要投诉", True),
        ("How long does a refund take?", False),
        ("退款多久到账？", False),
    ],
)
def test_complaints_and_anger_are_recognised(message: str, upset: bool) -> None:
    assert sounds_upset(message) is upset


def test_an_upset_customer_is_answered_and_offered_a_human_at_once(
    chat_service: ChatService,
) -> None:
    calm = ask(chat_service, "How long does a refund take?")
    upset = ask(chat_service, "How long does a refund take? This is ridiculous!")

    assert upset.outcome == "answered"
    assert upset.sources[0].id == calm.sources[0].id
    body = upset.answer.removeprefix(f"{AI_DISCLOSURE['en']}\n\n")
    assert body.startswith(f"{APOLOGY['en']}{HUMAN_OFFER['en']}\n\n")


def test_an_upset_customer_whose_question_is_declined_gets_an_apology_and_the_human_offer(
    chat_service: ChatService,
) -> None:
    reply = ask(chat_service, "你们太垃圾了，气死我了！")

    # An angry customer is not told that the knowledge base has no answer: it is offered a person.
    assert reply.outcome == "declined"
    assert reply.answer.endswith(f"{APOLOGY['zh']}{HUMAN_OFFER['zh']}")
    assert DECLINE["zh"] not in reply.answer
