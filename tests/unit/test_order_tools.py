"""The order tools: an order number in a message is looked up in the order system (the sample book
locally, the enterprise's API over HTTPS in AWS) and answered in the customer's language."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from kefu.adapters.orders import HttpsOrderSystem, SampleOrderBook, secret_api_key
from kefu.chat import ChatService
from kefu.errors import ConfigurationError, DependencyUnavailable
from kefu.models import ChatRequest
from kefu.order_tools import NOT_FOUND, ORDERS_DOWN, topic_of
from kefu.ports import Order


def ask(service: ChatService, message: str, **kwargs: Any) -> Any:
    return service.handle(ChatRequest(message=message, **kwargs))


def _service(retriever: Any, orders: Any) -> ChatService:
    from kefu.adapters.extractive import ExtractiveModel
    from kefu.adapters.sessions import SqliteSessionStore

    return ChatService(
        retriever=retriever,
        model=ExtractiveModel(),
        sessions=SqliteSessionStore(":memory:"),
        orders=orders,
    )


@pytest.fixture
def service(retriever: Any) -> ChatService:
    return _service(retriever, SampleOrderBook())


@pytest.mark.parametrize(
    ("message", "order_id"),
    [
        ("where is order 20231105-8812?", "20231105-8812"),
        ("我的订单号是 20231105-8812，帮我查一下物流", "20231105-8812"),
        ("订单202311058812345退款", "202311058812345"),
        ("How long does a refund take?", None),
        ("call 138-0013-8000", None),
        ("price 199, 2023-11-05", None),
    ],
)
def test_an_order_number_is_found_in_the_message(message: str, order_id: str | None) -> None:
    from kefu.return_flow import slots_in

    assert slots_in(message).get("order_id") == order_id


@pytest.mark.parametrize(
    ("message", "topic"),
    [
        ("where is order 20231105-8812?", "tracking"),
        ("帮我查一下 20231105-8812 的物流", "tracking"),
        ("20231028-4417 退款到哪了", "refund"),
        ("I want to return order 20231105-8812", "return"),
        ("order 20231101-0935", "status"),
    ],
)
def test_what_is_asked_about_the_order(message: str, topic: str) -> None:
    assert topic_of(message) == topic


def test_where_is_my_order_is_answered_from_the_sample_book(service: ChatService) -> None:
    reply = ask(service, "where is order 20231105-8812?")

    assert reply.outcome == "answered"
    assert reply.model == "orders"
    assert reply.intent == "shipping"
    assert "Order 20231105-8812: shipped." in reply.answer
    assert "SF Express SF1402938817" in reply.answer
    assert "arrived at the Shanghai hub" in reply.answer


def test_a_chinese_logistics_question_is_answered_in_chinese(service: ChatService) -> None:
    reply = ask(service, "我的订单号是 20231105-8812，帮我查一下物流")

    assert reply.language == "zh"
    assert "订单 20231105-8812：已发货。" in reply.answer
    assert "最新物流（2023-11-06 09:15）" in reply.answer


def test_a_refund_and_a_return_are_answered_from_the_order(service: ChatService) -> None:
    refund = ask(service, "20231028-4417 退款到哪了？")
    returned = ask(service, "I want to return order 20231105-8812")
    not_yet = ask(service, "can I return 20231101-0935?")

    assert "退款：退款已通过，正在原路退回。" in refund.answer
    assert refund.intent == "refunds"
    # A return is the guided flow: eligible, so it asks for the reason next.
    assert "can be returned until 2023-11-20" in returned.answer
    assert "What is the reason for the return?" in returned.answer
    assert returned.intent == "returns"
    assert "cannot be returned now (status: paid)" in not_yet.answer


def test_an_unknown_order_is_declined_with_the_number_to_check(service: ChatService) -> None:
    reply = ask(service, "where is order 20991231-0001?")

    assert reply.outcome == "declined"
    assert reply.answer.endswith(NOT_FOUND["en"].format(order_id="20991231-0001"))


class _DownOrders:
    def find(self, order_id: str) -> Order | None:
        raise DependencyUnavailable("order system answered 503")


def test_an_order_system_outage_declines_with_a_human_offered(retriever: Any) -> None:
    service = _service(retriever, _DownOrders())

    reply = ask(service, "where is order 20231105-8812?")

    assert reply.outcome == "declined"
    assert reply.answer.endswith(ORDERS_DOWN["en"])


# -- the HTTPS adapter, against a stand-in on loopback -----------------------------------------
class _OrderApi(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str | None]]] = []
    status = 200

    def do_GET(self) -> None:
        _OrderApi.seen.append((self.path, self.headers.get("x-api-key")))
        if self.path == "/v1/orders/20231105-8812" and _OrderApi.status == 200:
            body = json.dumps(
                {
                    "order_id": "20231105-8812",
                    "status": "delivered",
                    "placed_at": "2023-11-05",
                    "items": ["Down jacket"],
                    "refund_status": "refunded",
                }
            ).encode()
            self.send_response(200)
        else:
            body = b'{"message": "no"}'
            self.send_response(404 if _OrderApi.status == 200 else _OrderApi.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def order_api() -> Iterator[str]:
    _OrderApi.seen, _OrderApi.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OrderApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_the_https_adapter_sends_the_key_and_parses_the_order(order_api: str) -> None:
    orders = HttpsOrderSystem(order_api, api_key=lambda: "key-123")

    order = orders.find("20231105-8812")

    assert order is not None
    assert (order.status, order.refund_status, order.items) == (
        "delivered",
        "refunded",
        ("Down jacket",),
    )
    assert _OrderApi.seen == [("/v1/orders/20231105-8812", "key-123")]


def test_the_https_adapter_maps_missing_orders_and_failures(order_api: str) -> None:
    orders = HttpsOrderSystem(order_api, api_key=lambda: "key-123")

    assert orders.find("20991231-0001") is None
    assert orders.find("../admin") is None
    assert _OrderApi.seen[-1][0] == "/v1/orders/..%2Fadmin"  # the id cannot leave its path
    _OrderApi.status = 503
    with pytest.raises(DependencyUnavailable, match="503"):
        orders.find("20231105-8812")


def test_the_https_adapter_maps_an_unreachable_system() -> None:
    orders = HttpsOrderSystem("http://127.0.0.1:9", api_key=lambda: "k", timeout=0.5)

    with pytest.raises(DependencyUnavailable, match="unreachable"):
        orders.find("20231105-8812")


def test_the_order_api_must_use_https_outside_loopback() -> None:
    with pytest.raises(ConfigurationError, match="https"):
        HttpsOrderSystem("http://orders.example.com", api_key=lambda: "k")


def test_the_api_key_is_read_from_secrets_manager() -> None:
    import boto3
    from moto import mock_aws

    with mock_aws():
        boto3.client("secretsmanager").create_secret(Name="kefu/orders", SecretString="s3cret")
        assert secret_api_key("kefu/orders", max_age=0)() == "s3cret"
        with pytest.raises(DependencyUnavailable, match="key unreadable"):
            secret_api_key("kefu/missing", max_age=0)()


def test_the_composition_root_builds_the_configured_order_system() -> None:
    from kefu.bootstrap import build_orders
    from kefu.settings import Settings

    assert build_orders(Settings()) is None  # no order system until one is configured
    assert isinstance(build_orders(Settings(orders="sample")), SampleOrderBook)
    https = build_orders(
        Settings(orders="https", orders_url="https://orders.example.com", orders_api_key_secret="k")
    )
    assert isinstance(https, HttpsOrderSystem)
    with pytest.raises(ConfigurationError, match="KEFU_ORDERS_URL"):
        build_orders(Settings(orders="https"))
