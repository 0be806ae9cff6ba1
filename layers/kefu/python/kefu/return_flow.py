"""A return as a guided flow: the order number, the reason, whether the order system lets it
be returned, and the next step. What the customer said fills the slots (`slots_in`); each turn
asks for what is still missing."""

from __future__ import annotations

import re

from kefu.order_tools import NOT_FOUND, ORDER_ID, eligible_for_return
from kefu.ports import Order
from kefu.text import Language

# Why a customer returns an item, and how they say it.
_REASONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "wrong_item",
        re.compile(r"发错|寄错|不是我(买|订)的|wrong (item|product|one|colou?r)", re.IGNORECASE),
    ),
    (
        "quality",
        re.compile(
            r"质量|破损|坏了|损坏|瑕疵|有问题|不能用|用不了|故障|"
            r"\b(damaged|broken|defective|faulty|doesn'?t work|not working|stopped working|"
            r"cracked|torn|quality)\b",
            re.IGNORECASE,
        ),
    ),
    (
        "size",
        re.compile(
            r"尺码|尺寸|大小|太大|太小|偏大|偏小|不合身|穿不下|"
            r"\b(doesn'?t fit|don'?t fit|does not fit|wrong size|too (big|small|large|tight|"
            r"loose|long|short)|size)\b",
            re.IGNORECASE,
        ),
    ),
    (
        "not_as_described",
        re.compile(
            r"与描述不符|和描述不一样|色差|和图片不一样|not as described|looks different|"
            r"not what (i|it) (ordered|expected|showed)",
            re.IGNORECASE,
        ),
    ),
    (
        "changed_mind",
        re.compile(
            r"不想要|不喜欢|不需要了|买多了|无理由|改主意|"
            r"\b(changed my mind|don'?t (like|want|need) it|do not (like|want|need) it|"
            r"no longer (want|need)|no reason)\b",
            re.IGNORECASE,
        ),
    ),
)
REASON_LABELS: dict[str, dict[Language, str]] = {
    "wrong_item": {"zh": "发错商品", "en": "wrong item received"},
    "quality": {"zh": "质量问题", "en": "quality problem"},
    "size": {"zh": "尺码不合适", "en": "doesn't fit"},
    "not_as_described": {"zh": "与描述不符", "en": "not as described"},
    "changed_mind": {"zh": "七天无理由", "en": "changed my mind"},
}
# A customer who wants to start a return (not one asking about the policy).
_WANTS_RETURN = re.compile(
    r"(我|想|要|申请|怎么|如何)(要)?(办理)?退(货|掉|了|一)|退回去|(想|要)\s*return\b|"
    r"\b(i('d| would)? (like|want|need) to|can i|how (do|can) i|wanna) "
    r"(send (it |this |them |\w+ )?back|return)\b|"
    r"\breturn (this|it|my|an? )",
    re.IGNORECASE,
)

ASK_ORDER: dict[Language, str] = {
    "zh": "如需办理退货，请告诉我订单号，我帮您查一下这笔订单能否退货。",
    "en": "If you'd like to start a return, tell me the order number and I'll check whether it "
    "can be returned.",
}


def reason_in(message: str) -> str | None:
    return next((code for code, pattern in _REASONS if pattern.search(message)), None)


def wants_return(message: str) -> bool:
    return _WANTS_RETURN.search(message) is not None


def slots_in(message: str) -> dict[str, str]:
    """The slots a message fills: the order number and a return reason."""
    slots: dict[str, str] = {}
    if found := ORDER_ID.search(message):
        slots["order_id"] = found.group(1)
    if reason := reason_in(message):
        slots["reason"] = reason
    return slots


def product_of(order: Order) -> str:
    return "、".join(order.items) if len(order.items) <= 2 else f"{order.items[0]} …"


def return_step(order: Order | None, order_id: str, reason: str | None, language: Language) -> str:
    """The flow's next turn for `order_id` (None: no such order)."""
    zh = language == "zh"
    if order is None:
        return NOT_FOUND[language].format(order_id=order_id)
    if not eligible_for_return(order):
        return (
            f"订单 {order_id} 目前不能申请退货（订单状态：{order.status}）。"
            "如有疑问，回复“转人工”由人工客服为您处理。"
            if zh
            else f"Order {order_id} cannot be returned now (status: {order.status}). If you have "
            "questions, ask for a human agent."
        )
    items = product_of(order)
    if reason is None:
        return (
            f"订单 {order_id}（{items}）可以申请退货，截止日期 {order.returnable_until}。"
            "请问退货原因是什么？例如：尺码不合适、质量问题、发错商品、不想要了。"
            if zh
            else f"Order {order_id} ({items}) can be returned until {order.returnable_until}. "
            "What is the reason for the return? For example: it doesn't fit, a quality problem, "
            "the wrong item, or you changed your mind."
        )
    label = REASON_LABELS[reason][language]
    return (
        f"好的，退货原因：{label}。下一步：在「我的订单」中打开订单 {order_id}，点击「申请售后」，"
        f"选择退货并选择原因“{label}”提交，可同时预约上门取件。"
        f"请在 {order.returnable_until} 前提交申请。"
        if zh
        else f"Got it, reason: {label}. Next step: open order {order_id} in My Orders, tap "
        f'"Apply for after-sales", choose return and the reason "{label}", and submit; you can '
        f"book a courier pick-up in the same request. Please apply by {order.returnable_until}."
    )
