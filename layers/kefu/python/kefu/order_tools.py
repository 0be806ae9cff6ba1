"""The agent's order tools without a model: an order number in the message is looked up in the
order system, and what the customer asked about it (the parcel, a refund, a return, or the
order as a whole) is answered from what the system says, in the customer's language."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from kefu.errors import DependencyUnavailable
from kefu.ports import Order, OrderSystem, ToolSpec
from kefu.text import Language

Topic = Literal["tracking", "refund", "return", "status"]

# The shop's order numbers: a date and four digits ("20231105-8812"), or 12 to 20 digits.
ORDER_ID = re.compile(r"(?<![\d-])(\d{8}-\d{4}|\d{12,20})(?![\d-])")
_TOPICS: tuple[tuple[Topic, re.Pattern[str]], ...] = (
    ("return", re.compile(r"退货|退回|换货|\breturn", re.IGNORECASE)),
    ("refund", re.compile(r"退款|退钱|\brefund", re.IGNORECASE)),
    (
        "tracking",
        re.compile(
            r"物流|快递|到哪|发货|配送|运单|\b(track|tracking|where|deliver|delivery|shipping|"
            r"shipped|parcel|package|courier|carrier)\b",
            re.IGNORECASE,
        ),
    ),
)

# The KB category an order question belongs to: the turn's intent.
INTENTS: dict[Topic, str] = {
    "tracking": "shipping",
    "refund": "refunds",
    "return": "returns",
    "status": "orders",
}
_STATUS: dict[str, dict[Language, str]] = {
    "placed": {"zh": "已下单，待付款", "en": "placed, awaiting payment"},
    "paid": {"zh": "已付款，待发货", "en": "paid, not shipped yet"},
    "shipped": {"zh": "已发货", "en": "shipped"},
    "delivered": {"zh": "已签收", "en": "delivered"},
    "cancelled": {"zh": "已取消", "en": "cancelled"},
    "returned": {"zh": "已退货", "en": "returned"},
}
_REFUND: dict[str, dict[Language, str]] = {
    "requested": {"zh": "退款申请已提交，等待审核", "en": "requested, awaiting review"},
    "approved": {"zh": "退款已通过，正在原路退回", "en": "approved, on its way back to you"},
    "refunded": {"zh": "已退款", "en": "refunded"},
    "rejected": {"zh": "退款未通过", "en": "not approved"},
}
NOT_FOUND: dict[Language, str] = {
    "zh": "没有找到订单 {order_id}。请核对订单号（可在「我的订单」中查看），或回复“转人工”。",
    "en": "I couldn't find order {order_id}. Please check the number (it is under My orders), "
    "or ask for a human agent.",
}
ORDERS_DOWN: dict[Language, str] = {
    "zh": "抱歉，暂时无法查询订单系统。请稍后再试，或回复“转人工”由人工客服为您处理。",
    "en": "Sorry, I can't reach the order system right now. Please try again shortly, or ask "
    "for a human agent.",
}


def topic_of(message: str) -> Topic:
    return next((topic for topic, pattern in _TOPICS if pattern.search(message)), "status")


def describe(order: Order, topic: Topic, language: Language) -> str:
    """What the order system says about `topic`, as a short answer."""
    zh = language == "zh"
    status = _STATUS.get(order.status, {"zh": order.status, "en": order.status})[language]
    head = f"订单 {order.order_id}：{status}。" if zh else f"Order {order.order_id}: {status}."
    lines = [head]
    if topic in ("tracking", "status") and order.tracking_number:
        parcel = f"{order.carrier} {order.tracking_number}".strip()
        lines.append(f"快递：{parcel}。" if zh else f"Parcel: {parcel}.")
        if order.tracking:
            last = order.tracking[-1]
            when = last.at.replace("T", " ")[:16]
            lines.append(
                f"最新物流（{when}）：{last.description}。"
                if zh
                else f"Latest update ({when}): {last.description}."
            )
    elif topic == "tracking":
        lines.append("暂未发货，发货后可在此查询物流。" if zh else "It has not shipped yet.")
    if topic in ("refund", "status") and order.refund_status:
        refund = _REFUND.get(order.refund_status, {"zh": "", "en": ""})[language]
        lines.append(f"退款：{refund}。" if zh else f"Refund: {refund}.")
    elif topic == "refund":
        lines.append("该订单没有退款申请。" if zh else "There is no refund on this order.")
    if topic == "return":
        if order.returnable_until:
            lines.append(
                f"可申请退货，截止日期 {order.returnable_until}：在「我的订单」中选择该订单，"
                "点击「申请售后」，选择退货原因即可。"
                if zh
                else f"It can be returned until {order.returnable_until}: open it under My "
                "orders, choose Return, and give the reason."
            )
        else:
            lines.append(
                "该订单目前不支持退货。如有疑问请回复“转人工”。"
                if zh
                else "It cannot be returned now. Ask for a human agent if you have questions."
            )
    return "\n".join(lines)


# --- the same lookups as tools a model calls --------------------------------------------------

_ORDER_ID_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {
            "type": "string",
            "description": "The order number the customer gave, e.g. 20231105-8812.",
        }
    },
    "required": ["order_id"],
}
ORDER_TOOL_SPECS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "get_order_status",
        "The status of one order (placed, paid, shipped, delivered, cancelled, returned), "
        "when it was placed and its items.",
        _ORDER_ID_INPUT,
    ),
    ToolSpec(
        "track_parcel",
        "The carrier, tracking number and tracking events of an order's parcel.",
        _ORDER_ID_INPUT,
    ),
    ToolSpec(
        "get_refund_status",
        "The state of a refund on an order: none, requested, approved, refunded or rejected.",
        _ORDER_ID_INPUT,
    ),
    ToolSpec(
        "check_return_eligibility",
        "Whether an order can be returned now, and until when.",
        _ORDER_ID_INPUT,
    ),
)


def eligible_for_return(order: Order) -> bool:
    """The order system decides: it gives a date until which the order may be returned, or
    none when it cannot be."""
    return bool(order.returnable_until) and order.status not in ("cancelled", "returned")


class OrderTools:
    """The order system as `Tools`: what a model calls, and what the turn without a model calls
    through `lookup`."""

    specs = ORDER_TOOL_SPECS

    def __init__(self, orders: OrderSystem) -> None:
        self._orders = orders
        # One turn's tools (`for_turn`) look each order up once, and keep what they told.
        self._found: dict[str, Order | None] = {}
        self.results: list[dict[str, Any]] = []

    def for_turn(self) -> OrderTools:
        return OrderTools(self._orders)

    def lookup(self, order_id: str) -> Order | None:
        """Raises DependencyUnavailable."""
        if order_id not in self._found:
            self._found[order_id] = self._orders.find(order_id)
        return self._found[order_id]

    def call(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        result = self._call(name, arguments)
        self.results.append(result)
        return result

    def _call(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        if name not in {spec.name for spec in ORDER_TOOL_SPECS}:
            return {"error": f"unknown tool {name!r}"}
        order_id = str(arguments.get("order_id", "")).strip()
        if not ORDER_ID.fullmatch(order_id):
            return {"error": "order_id must be an order number such as 20231105-8812"}
        try:
            order = self.lookup(order_id)
        except DependencyUnavailable:
            return {"error": "the order system is unavailable; offer a human agent"}
        if order is None:
            return {"error": f"no order {order_id}"}
        if name == "get_order_status":
            return {
                "order_id": order.order_id,
                "status": order.status,
                "placed_at": order.placed_at,
                "items": list(order.items),
            }
        if name == "track_parcel":
            return {
                "order_id": order.order_id,
                "status": order.status,
                "carrier": order.carrier,
                "tracking_number": order.tracking_number,
                "events": [{"at": e.at, "description": e.description} for e in order.tracking],
            }
        if name == "get_refund_status":
            return {"order_id": order.order_id, "refund_status": order.refund_status or "none"}
        return {
            "order_id": order.order_id,
            "status": order.status,
            "eligible": eligible_for_return(order),
            "returnable_until": order.returnable_until,
        }
