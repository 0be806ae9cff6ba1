"""Claude through Anthropic's API at its edge: the exact JSON the SDK sends (a mock transport, no
network), the tool loop in `tool_use` / `tool_result` blocks, the sources line, the errors it
maps; and the composition root building it only when asked to."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import anthropic
import httpx2
import pytest

from kefu.adapters.anthropic_model import AnthropicClaude
from kefu.adapters.claude_prompt import (
    CHAT_BUDGET,
    MAX_TOOL_ROUNDS,
    STANDALONE_MAX_TOKENS,
    SUMMARY_MAX_TOKENS,
    system_prompt,
)
from kefu.errors import ConfigurationError, DependencyUnavailable
from kefu.models import Chunk, SearchHit, Turn
from kefu.ports import AnswerContext, ConversationModel, ToolSpec

MODEL = "claude-haiku-5-5"
ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}},
    "required": ["order_id"],
}
SHIPPED = {"order_id": "20231105-8812", "status": "shipped", "items": ["Kettle"]}
KNOWLEDGE = (
    "<knowledge>\n"
    '<source id="returns.en.md#002" title="Returns policy">'
    "We pay return shipping for faulty items.</source>\n"
    "</knowledge>\n"
)


def passage(chunk_id: str, text: str, title: str = "Returns policy") -> SearchHit:
    chunk = Chunk(id=chunk_id, kind="passage", lang="en", title=title, text=text, keys=())
    return SearchHit(chunk=chunk, score=0.9, dense=0.9, lexical=0.0, nearest=0.9)


HITS = (passage("returns.en.md#002", "We pay return shipping for faulty items."),)
CONTEXT = AnswerContext(
    question="Who pays for return shipping?", language="en", hits=HITS, history=()
)
EARLIER = (
    Turn(
        turn_id="1",
        message="Where is order 20231105-8812?",
        answer="It has shipped with SF Express.",
        language="en",
        outcome="answered",
        intent="shipping",
        at=datetime(2026, 1, 1, tzinfo=UTC),
    ),
)


class OrderLookup:
    """A `Tools` fake: one order tool over a dict of orders, recording each call."""

    specs = (ToolSpec("get_order_status", "The status of one order.", ORDER_SCHEMA),)

    def __init__(self, orders: dict[str, dict[str, Any]]) -> None:
        self.orders = orders
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def call(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append((name, dict(arguments)))
        order_id = str(arguments.get("order_id", ""))
        return self.orders.get(order_id) or {"error": f"no order {order_id}"}


def order_context(tools: OrderLookup) -> AnswerContext:
    return AnswerContext(
        question="Where is order 20231105-8812?", language="en", hits=HITS, history=(), tools=tools
    )


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(use_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": use_id, "name": name, "input": arguments}


def message(*content: dict[str, Any], stop_reason: str = "end_turn") -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": list(content),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 120, "output_tokens": 12},
    }


Reply = dict[str, Any] | Callable[[httpx2.Request], httpx2.Response]


class MessagesAPI:
    """Answers `POST /v1/messages` with the queued replies in turn (a message's JSON, or a
    function of the request), recording each request's JSON body."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        assert (request.method, request.url.path) == ("POST", "/v1/messages")
        self.bodies.append(json.loads(request.content))
        reply = self.replies.pop(0)
        if callable(reply):
            return reply(request)
        return httpx2.Response(200, json=reply)


@pytest.fixture(autouse=True)
def _no_anthropic_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "KEFU_ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "KEFU_MODEL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def api() -> MessagesAPI:
    return MessagesAPI()


@pytest.fixture
def model(api: MessagesAPI) -> AnthropicClaude:
    client = anthropic.Anthropic(
        http_client=httpx2.Client(transport=httpx2.MockTransport(api)),
        base_url="http://test",
        api_key="test",
        max_retries=0,
    )
    return AnthropicClaude(client, model=MODEL)


def test_the_request_carries_the_prompt_the_knowledge_the_question_and_the_tools(
    api: MessagesAPI, model: AnthropicClaude
) -> None:
    api.replies.append(message(text("Which order do you mean?\n<sources></sources>")))

    answer = model.answer(order_context(OrderLookup({})))

    assert api.bodies == [
        {
            "model": MODEL,
            "max_tokens": 512,
            "system": system_prompt("en"),
            "messages": [
                {
                    "role": "user",
                    "content": KNOWLEDGE
                    + "<customer_message>Where is order 20231105-8812?</customer_message>",
                }
            ],
            "tools": [
                {
                    "name": "get_order_status",
                    "description": "The status of one order.",
                    "input_schema": ORDER_SCHEMA,
                }
            ],
        }
    ]
    assert answer.text == "Which order do you mean?"
    assert answer.model == "claude"
    assert answer.sources == ()
    assert answer.tools_used == ()


def test_without_tools_none_are_offered_and_earlier_turns_alternate(
    api: MessagesAPI, model: AnthropicClaude
) -> None:
    api.replies.append(message(text("It should arrive tomorrow.")))
    context = AnswerContext(
        question="and when will it arrive?",
        language="en",
        hits=HITS,
        history=EARLIER,
        summary="Customer waits for a kettle.",
        facts={"order_id": "20231105-8812"},
    )

    model.answer(context)

    (body,) = api.bodies
    assert "tools" not in body
    assert body["messages"] == [
        {
            "role": "user",
            "content": "<customer_message>Where is order 20231105-8812?</customer_message>",
        },
        {"role": "assistant", "content": "It has shipped with SF Express."},
        {
            "role": "user",
            "content": KNOWLEDGE
            + "<conversation_summary>Customer waits for a kettle.</conversation_summary>\n"
            "<conversation_facts>\n"
            '<fact name="order_id">20231105-8812</fact>\n'
            "</conversation_facts>\n"
            "<customer_message>and when will it arrive?</customer_message>",
        },
    ]


def test_a_tool_use_is_answered_with_a_tool_result_and_the_model_then_replies(
    api: MessagesAPI, model: AnthropicClaude
) -> None:
    # Given a model that asks for the order's status, then answers from it
    tools = OrderLookup({"20231105-8812": SHIPPED})
    asked = tool_use("toolu_01", "get_order_status", {"order_id": "20231105-8812"})
    api.replies += [
        message(text("Let me look that up."), asked, stop_reason="tool_use"),
        message(text("Order 20231105-8812 has shipped.\n<sources></sources>")),
    ]

    # When it answers
    answer = model.answer(order_context(tools))

    # Then the tool ran with the model's input, and its result went back as a tool_result
    assert tools.calls == [("get_order_status", {"order_id": "20231105-8812"})]
    first, second = api.bodies
    assert second["tools"] == first["tools"]
    assert second["messages"] == [
        *first["messages"],
        {"role": "assistant", "content": [text("Let me look that up."), asked]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01",
                    "content": json.dumps(SHIPPED),
                    "is_error": False,
                }
            ],
        },
    ]
    assert answer.text == "Order 20231105-8812 has shipped."
    assert answer.tools_used == ("get_order_status",)


def test_a_failed_tool_goes_back_as_an_error_result(
    api: MessagesAPI, model: AnthropicClaude
) -> None:
    api.replies += [
        message(
            tool_use("toolu_01", "get_order_status", {"order_id": "20990101-0000"}),
            stop_reason="tool_use",
        ),
        message(text("I could not find order 20990101-0000.")),
    ]

    answer = model.answer(order_context(OrderLookup({})))

    result = api.bodies[1]["messages"][-1]["content"][0]
    assert result["is_error"] is True
    assert json.loads(result["content"]) == {"error": "no order 20990101-0000"}
    assert answer.sources is None  # the reply did not say


def test_a_model_that_keeps_calling_tools_is_a_dependency_unavailable(
    api: MessagesAPI, model: AnthropicClaude
) -> None:
    tools = OrderLookup({"20231105-8812": SHIPPED})
    api.replies += [
        message(
            tool_use(f"toolu_{n}", "get_order_status", {"order_id": "20231105-8812"}),
            stop_reason="tool_use",
        )
        for n in range(MAX_TOOL_ROUNDS + 1)
    ]

    with pytest.raises(DependencyUnavailable, match="tools"):
        model.answer(order_context(tools))

    assert len(tools.calls) == MAX_TOOL_ROUNDS
    assert not api.replies


@pytest.mark.parametrize(
    ("reply", "expected_text", "sources"),
    [
        (
            "We do, for faulty items.\n<sources>returns.en.md#002</sources>",
            "We do, for faulty items.",
            ("returns.en.md#002",),
        ),
        (
            "We do.\n<sources>made-up.md#9,returns.en.md#002</sources>",
            "We do.",
            ("returns.en.md#002",),
        ),
        ("I can't say.\n<sources></sources>", "I can't say.", ()),
        ("We do, for faulty items.", "We do, for faulty items.", None),
    ],
)
def test_the_sources_line_is_stripped_and_only_supplied_ids_are_kept(
    api: MessagesAPI,
    model: AnthropicClaude,
    reply: str,
    expected_text: str,
    sources: tuple[str, ...] | None,
) -> None:
    api.replies.append(message(text(reply)))

    answer = model.answer(CONTEXT)

    assert answer.text == expected_text
    assert answer.sources == sources


def test_a_follow_up_is_rewritten_and_old_turns_are_summarised(
    api: MessagesAPI, model: AnthropicClaude
) -> None:
    api.replies += [
        message(text(" When will order 20231105-8812 arrive? ")),
        message(text("订单 20231105-8812 已发货。\n")),
    ]

    question = model.standalone_question(
        "and when will it arrive?", EARLIER, "Customer waits for a kettle.", "en"
    )
    summary = model.summarize("", EARLIER, "zh")

    assert question == "When will order 20231105-8812 arrive?"
    assert summary == "订单 20231105-8812 已发货。"
    rewrite, fold = api.bodies
    assert rewrite["max_tokens"] == STANDALONE_MAX_TOKENS
    assert "English" in rewrite["system"]
    assert rewrite["messages"] == [
        {
            "role": "user",
            "content": "<conversation_summary>Customer waits for a kettle."
            "</conversation_summary>\n"
            "<conversation>\n"
            "<turn><customer>Where is order 20231105-8812?</customer>"
            "<assistant>It has shipped with SF Express.</assistant></turn>\n"
            "</conversation>\n"
            "<customer_message>and when will it arrive?</customer_message>",
        }
    ]
    assert fold["max_tokens"] == SUMMARY_MAX_TOKENS
    assert "Simplified Chinese" in fold["system"]
    assert "tools" not in fold


def _status(code: int, kind: str) -> Callable[[httpx2.Request], httpx2.Response]:
    def reply(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            code, json={"type": "error", "error": {"type": kind, "message": "no"}}
        )

    return reply


def _timeout(request: httpx2.Request) -> httpx2.Response:
    raise httpx2.ReadTimeout("timed out", request=request)


def _refused(request: httpx2.Request) -> httpx2.Response:
    raise httpx2.ConnectError("connection refused", request=request)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (_status(429, "rate_limit_error"), "429 RateLimitError"),
        (_status(500, "api_error"), "500"),
        (_status(529, "overloaded_error"), "529"),
        (_status(401, "authentication_error"), "401 AuthenticationError"),
        (_timeout, "APITimeoutError"),
        (_refused, "APIConnectionError"),
    ],
)
def test_every_api_failure_is_a_dependency_unavailable(
    api: MessagesAPI,
    model: AnthropicClaude,
    reply: Reply,
    reason: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("kefu.adapters.anthropic_model.time.sleep", lambda seconds: None)
    api.replies.extend([reply] * CHAT_BUDGET.max_attempts)  # every attempt fails

    with pytest.raises(DependencyUnavailable, match=reason):
        model.answer(CONTEXT)


def test_a_throttled_call_is_retried_after_a_capped_pause(
    api: MessagesAPI, model: AnthropicClaude, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kefu.adapters.anthropic_model import RETRY_PAUSE_CAP

    pauses: list[float] = []
    monkeypatch.setattr("kefu.adapters.anthropic_model.time.sleep", pauses.append)

    def throttled(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            429,
            headers={"retry-after": "30"},
            json={"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}},
        )

    api.replies.extend([throttled, _status(401, "authentication_error")])
    with pytest.raises(DependencyUnavailable, match="401"):
        model.answer(CONTEXT)
    # It asked for 30 s; the turn waits at most the cap, then tries again once.
    assert pauses == [RETRY_PAUSE_CAP]


@pytest.mark.parametrize("call", ["standalone_question", "summarize"])
def test_a_failing_conversation_call_is_a_dependency_unavailable(
    api: MessagesAPI, model: AnthropicClaude, call: str
) -> None:
    api.replies.append(_status(429, "rate_limit_error"))
    calls: dict[str, Callable[[], str]] = {
        "standalone_question": lambda: model.standalone_question("and then?", EARLIER, "", "en"),
        "summarize": lambda: model.summarize("", EARLIER, "en"),
    }

    with pytest.raises(DependencyUnavailable, match="429"):
        calls[call]()


def test_an_answer_without_text_is_a_dependency_unavailable(
    api: MessagesAPI, model: AnthropicClaude
) -> None:
    api.replies.append(message(stop_reason="refusal"))

    with pytest.raises(DependencyUnavailable, match="refusal"):
        model.answer(CONTEXT)


def test_anthropic_claude_is_a_conversation_model(model: AnthropicClaude) -> None:
    assert isinstance(model, ConversationModel)


def test_the_client_honours_the_base_url_override_and_the_chat_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9912")

    client = AnthropicClaude.create(api_key="sk-test", model=MODEL)._client

    assert str(client.base_url) == "http://127.0.0.1:9912"
    assert client.api_key == "sk-test"
    assert client.timeout == httpx2.Timeout(
        CHAT_BUDGET.read_timeout, connect=CHAT_BUDGET.connect_timeout
    )
    assert client.max_retries == 0  # the adapter retries, with its pause capped


def test_without_the_override_the_client_calls_anthropic() -> None:
    client = AnthropicClaude.create(api_key="sk-test", model=MODEL)._client

    assert str(client.base_url) == "https://api.anthropic.com"


# --- the composition root ---


def test_the_composition_root_builds_anthropic_claude_with_the_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kefu.bootstrap import build_model
    from kefu.settings import Settings

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-env")

    built = build_model(Settings(model="anthropic", anthropic_model="claude-x"))

    assert isinstance(built, AnthropicClaude)
    assert built.model == "claude-x"
    assert built._client.api_key == "sk-env"


def test_the_composition_root_reads_the_key_from_secrets_manager_without_the_variable() -> None:
    import boto3
    from moto import mock_aws

    from kefu.bootstrap import build_model
    from kefu.settings import Settings

    name = f"kefu/anthropic-{uuid.uuid4().hex}"
    with mock_aws():
        boto3.client("secretsmanager").create_secret(Name=name, SecretString="sk-secret")

        built = build_model(Settings(model="anthropic", anthropic_api_key_secret=name))

    assert isinstance(built, AnthropicClaude)
    assert built._client.api_key == "sk-secret"


def test_anthropic_without_a_key_or_a_secret_is_a_configuration_error() -> None:
    from kefu.bootstrap import build_model
    from kefu.settings import Settings

    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        build_model(Settings(model="anthropic"))


def test_an_api_key_alone_does_not_switch_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from kefu.bootstrap import build_model
    from kefu.settings import Settings

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-env")

    assert build_model(Settings()).name == "extractive"
