"""Small talk and upset customers: what needs no knowledge base, recognised by rules.

A message is small talk only when the whole of it is one (after case, spaces, punctuation and
emoji are set aside): "hi, where is my refund?" is a question, not a greeting. An upset customer
is still answered, and offered a human at once.
"""

from __future__ import annotations

import re
from typing import Literal

from kefu.text import Language

SmallTalk = Literal["greeting", "thanks", "goodbye", "identity", "contact"]

_PATTERNS: dict[SmallTalk, re.Pattern[str]] = {
    "identity": re.compile(
        r"(are|r) (you|u) (a |an )?(real )?(bot|robot|chatbot|human|person|machine|ai|real)"
        r"( or (a |an )?(bot|robot|human|person|machine|ai))?|who are you|what are you|"
        r"am i (talking|chatting|speaking) (to|with) (a |an )?(real )?"
        r"(bot|robot|human|person|machine|ai)|"
        r"(你|您)?是(不是)?(机器人|真人|人工|人工智能|ai|谁|人|客服)(吗|呀|啊|嘛)?|"
        r"(你|您)是(机器人|真人|ai)还是(真人|机器人|人工)|我在和(机器人|真人|谁)(说话|聊天)(吗)?"
    ),
    # How to reach the shop: the KB gives no phone number or e-mail, and none is made up.
    "contact": re.compile(
        r"((what s|what is|whats|give me|tell me|send me) )?(your|the|ur) (customer service |"
        r"support |shop s |store s )?(phone|telephone|contact|hotline|service|support|email|"
        r"e mail)( number| no| details| info| address)?( please| pls)?|"
        r"how (can|do|could) i (contact|reach|call|email|phone) (you|you guys|customer service|"
        r"support|the shop|the store)|do you have an? (phone number|hotline|email address)|"
        r"(你们|您|贵店|商城)?(的)?(客服|官方|人工)?(电话|热线|联系方式|邮箱|手机号)"
        r"(是多少|是什么|多少|有吗|给我|发我)?(呀|啊|吗)?|怎么(联系|找到)(你们|客服|商家)"
    ),
    "greeting": re.compile(
        r"((hi|hello|hey|hiya|howdy|greetings|good (morning|afternoon|evening))( there| kefu)?)+|"
        r"((你好|您好|嗨|哈喽|哈啰|在吗|在不在|有人吗|早上好|上午好|下午好|晚上好|早)(呀|啊|哇|吗)?)+"
    ),
    "thanks": re.compile(
        r"(thanks|thank you|thx|ty|cheers|many thanks)( (so|very) much| a lot)?( (for|4) "
        r"(your|the) help)?( (bye|goodbye))?|"
        r"(谢谢|多谢|感谢|谢啦|谢了|辛苦了)(你|您)?(了|啦|哈)?(拜拜|再见)?"
    ),
    "goodbye": re.compile(
        r"(ok |okay )?(bye|goodbye|bye bye|see you|see ya|have a (nice|good) day)|"
        r"(好的)?(再见|拜拜|回头见)"
    ),
}
# Set aside before matching: spaces, punctuation of both languages, symbols and emoji.
_NOISE = re.compile(r"[\s\W_]+", re.UNICODE)

_UPSET = re.compile(
    r"投诉|太差|很差|差评|垃圾|气死|生气|愤怒|骗子|骗人|忍无可忍|太过分|什么破|搞什么|无语|退钱|"
    r"\b(complain|complaint|terrible|awful|horrible|worst|ridiculous|unacceptable|angry|furious|"
    r"scam|rip[- ]?off|disgusting|useless|pathetic|fed up|sick of)\b",
    re.IGNORECASE,
)

REPLIES: dict[SmallTalk, dict[Language, str]] = {
    "greeting": {
        "zh": "您好！请问有什么可以帮您？订单、物流、退换货、退款、发票等问题都可以问我。",
        "en": "Hello! How can I help? You can ask me about orders, delivery, returns, refunds, "
        "invoices and more.",
    },
    "thanks": {
        "zh": "不客气！还有其他问题随时问我。",
        "en": "You're welcome! Ask me any time if anything else comes up.",
    },
    "goodbye": {
        "zh": "感谢您的咨询，再见！",
        "en": "Thanks for getting in touch. Goodbye!",
    },
    "identity": {
        "zh": "我是青鸟商城的智能客服，一个 AI 助手，会根据商城的帮助内容回答您的问题。"
        "如需真人客服，随时回复“转人工”即可。",
        "en": "I'm the shop's customer-service assistant, an AI that answers from our help "
        "content. If you'd like a person instead, just ask for a human agent at any time.",
    },
    "contact": {
        "zh": "抱歉，我这里没有可以提供的电话或邮箱。您可以直接在这个对话里回复“转人工”，"
        "人工客服会在这里为您处理。",
        "en": "I don't have a phone number or e-mail address I can give you, but a human agent "
        "can help you right here in this chat: just ask for one.",
    },
}
APOLOGY: dict[Language, str] = {
    "zh": "非常抱歉给您带来不好的体验。",
    "en": "I'm very sorry about this experience. ",
}
HUMAN_OFFER: dict[Language, str] = {
    "zh": "如需人工客服立即为您处理，请回复“转人工”。",
    "en": "If you'd like a human agent to take this over right away, just say so.",
}


# A closing: thanks or a goodbye with a few words around it ("ok thanks", "明白了，谢谢",
# "thanks, I'll check the lockers downstairs"), but no question and no order number.
_CLOSING_BYE = re.compile(r"再见|拜拜|\b(bye|goodbye|bye bye|see you)\b", re.IGNORECASE)
_CLOSING_THANKS = re.compile(
    r"谢谢|多谢|感谢|谢啦|谢了|\b(thanks|thank you|thx|cheers)\b", re.IGNORECASE
)
_QUESTION = re.compile(
    r"[?？]|吗|呢|谁|怎么|什么|哪|如何|是否|有没有|能否|要不要|多久|多少|几|能不能|可不可以|\d{4}|"
    r"\b(how|what|where|when|why|which|who|can|could|would|will|should|but)\b",
    re.IGNORECASE,
)
_MAX_CLOSING_CHARS = 48


def small_talk(message: str) -> SmallTalk | None:
    """What kind of small talk the whole message is, if it is nothing but that (or a closing:
    thanks or goodbye with a few words and no question)."""
    text = _NOISE.sub(" ", message.lower()).strip()
    if not text or len(text) > 60:
        return None
    for kind, pattern in _PATTERNS.items():
        if pattern.fullmatch(text) or pattern.fullmatch(text.replace(" ", "")):
            return kind
    if len(message) <= _MAX_CLOSING_CHARS and not _QUESTION.search(message):
        if _CLOSING_BYE.search(message):
            return "goodbye"
        if _CLOSING_THANKS.search(message):
            return "thanks"
    return None


def sounds_upset(message: str) -> bool:
    """Whether the customer complains or sounds angry: a human is offered at once."""
    return _UPSET.search(message) is not None
