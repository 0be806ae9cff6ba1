"""What the service says in its own voice, in each language it answers in."""

from __future__ import annotations

import re

from kefu.text import Language

AI_DISCLOSURE: dict[Language, str] = {
    "zh": "您好，我是青鸟智能客服（AI 助手）。如需人工服务，随时回复“转人工”即可。",
    "en": "Hi, I'm an AI assistant. You can ask for a human agent at any time.",
}

DECLINE: dict[Language, str] = {
    "zh": "抱歉，这个问题我暂时无法从知识库中找到可靠的答案。您可以换个说法再问一次，或回复“转人工”由人工客服为您处理。",
    "en": "Sorry, I couldn't find a reliable answer to that in our help content. You can rephrase "
    "the question, or ask for a human agent and a colleague will take it from here.",
}

HANDOVER: dict[Language, str] = {
    "zh": "好的，正在为您转接人工客服，请稍候。人工客服服务时间为每天 9:00–22:00，我们已保留您的对话记录，无需重复描述问题。",
    "en": "Sure, I'm passing you to a human agent now. Agents are available 9:00–22:00 every "
    "day, and they will see this conversation, so you won't need to repeat yourself.",
}

HANDED_OVER: dict[Language, str] = {
    "zh": "我已将对话转给人工客服，客服会在这里回复您（服务时间每天 9:00–22:00），无需重复描述问题。",
    "en": "I've passed this conversation to a human colleague, who will reply here (agents are "
    "available 9:00–22:00 every day); you won't need to repeat yourself.",
}
STILL_NOT_FOUND: dict[Language, str] = {
    "zh": "抱歉，这个问题我仍然无法可靠地回答。" + HANDED_OVER["zh"],
    "en": "Sorry, I still can't find a reliable answer to that. " + HANDED_OVER["en"],
}
HUMAN_WILL_REPLY: dict[Language, str] = {
    "zh": "已收到，您的消息已转给人工客服，客服会在这里尽快回复您。",
    "en": "Got it: your message is with the human agent, who will reply here shortly.",
}

MODEL_DOWN: dict[Language, str] = {
    "zh": "抱歉，我暂时无法回答这个问题。请稍后再试，或回复“转人工”由人工客服为您处理。",
    "en": "Sorry, I can't answer that right now. Please try again shortly, or ask for a human "
    "agent.",
}
MODEL_DOWN_HANDED_OVER: dict[Language, str] = {
    "zh": "抱歉，我暂时无法回答这个问题。" + HANDED_OVER["zh"],
    "en": "Sorry, I can't answer that right now. " + HANDED_OVER["en"],
}
RETRIEVAL_DOWN: dict[Language, str] = {
    "zh": "抱歉，系统暂时无法查询知识库。请稍后再试，或回复“转人工”由人工客服为您处理。",
    "en": "Sorry, I can't look up our help content right now. Please try again shortly, or ask "
    "for a human agent.",
}

PASSAGE_LEAD: dict[Language, str] = {
    "zh": "根据《{title}》：",
    "en": "From our {title}:",
}

_HUMAN_REQUEST = re.compile(
    r"转人工|人工客服|人工服务|找人工|要人工|接人工|真人|客服人员|"
    r"\b(human|real person|live (agent|person|chat)|customer service (agent|rep(resentative)?)|"
    r"(talk|speak|chat) (to|with) (an? )?(agent|person|someone|representative|operator))\b",
    re.IGNORECASE,
)


def asks_for_human(message: str) -> bool:
    """True when the customer asks to be handed to a person, in either language."""
    return _HUMAN_REQUEST.search(message) is not None
