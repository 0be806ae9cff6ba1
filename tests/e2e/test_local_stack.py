"""The whole product as `make run` serves it: the real embedder and the sample KB, over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import STARTUP_LIMIT_S, LocalStack, start, stop

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(STARTUP_LIMIT_S + 60)]


def call(stack: LocalStack, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        stack.url + path, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw, status = response.read(), response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    return status, json.loads(raw) if raw.startswith((b"{", b"[")) else raw.decode()


def chat(stack: LocalStack, message: str, **fields: Any) -> dict[str, Any]:
    status, reply = call(
        stack, "POST", "/v1/chat", json.dumps({"message": message, **fields}).encode()
    )
    assert status == 200, reply
    return reply


def test_the_chat_page_is_served(local_stack: LocalStack) -> None:
    status, page = call(local_stack, "GET", "/")
    assert status == 200
    assert "<title>Kefu" in page
    assert "/v1/chat" in page


def test_a_chinese_question_is_answered_from_the_right_faq(local_stack: LocalStack) -> None:
    reply = chat(local_stack, "我的发票去哪里下载呀")
    assert reply["outcome"] == "answered"
    assert reply["sources"][0]["id"] == "invoices-02-zh"
    assert reply["language"] == "zh"
    assert "AI" in reply["answer"]  # the first answer of a session discloses the AI


def test_an_english_question_is_answered_from_the_right_faq(local_stack: LocalStack) -> None:
    reply = chat(local_stack, "I forgot my password, how can I reset it?")
    assert reply["outcome"] == "answered"
    assert reply["sources"][0]["id"] == "account-01-en"
    assert reply["language"] == "en"


def test_an_off_topic_question_is_declined(local_stack: LocalStack) -> None:
    reply = chat(local_stack, "Can you recommend a good recipe for lasagna?")
    assert reply["outcome"] == "declined"
    assert reply["sources"] == []


def test_the_sample_orders_status_greetings_and_complaints_are_answered(
    local_stack: LocalStack,
) -> None:
    order = chat(local_stack, "我的订单号是 20231105-8812，帮我查一下物流")
    assert (order["outcome"], order["model"]) == ("answered", "orders")
    assert "已发货" in order["answer"]

    greeting = chat(local_stack, "你好", session_id=order["session_id"])
    assert (greeting["outcome"], greeting["model"]) == ("answered", "rules")

    complaint = chat(local_stack, "This is ridiculous, where is my refund?")
    assert "human agent" in complaint["answer"]


def test_a_conversation_continues_across_requests(local_stack: LocalStack) -> None:
    first = chat(local_stack, "转人工")
    assert first["outcome"] == "handed_over"
    second = chat(local_stack, "How much is shipping?", session_id=first["session_id"])
    assert second["session_id"] == first["session_id"]
    assert "AI assistant" not in second["answer"]


def test_bad_input_gets_a_json_error(local_stack: LocalStack) -> None:
    status, reply = call(local_stack, "POST", "/v1/chat", b"{not json")
    assert status == 400
    assert reply["error"]["code"] == "malformed_json"
    status, reply = call(local_stack, "GET", "/v1/unknown")
    assert status == 404
    assert reply["error"]["code"] == "not_found"


def test_health_and_openapi_are_served(local_stack: LocalStack) -> None:
    assert call(local_stack, "GET", "/v1/health") == (200, {"status": "ok", "version": "0.1.0"})
    status, document = call(local_stack, "GET", "/v1/openapi.json")
    assert status == 200
    assert "/v1/chat" in document["paths"]


def test_a_second_start_reuses_the_index(local_stack: LocalStack, data_dir: Path) -> None:
    process, again = start(data_dir)
    try:
        summary = next(line for line in again.output if line.startswith("files "))
        assert "(0 written" in summary
        assert again.url != local_stack.url
        assert chat(again, "How much is shipping?")["outcome"] == "answered"
    finally:
        stop(process)
