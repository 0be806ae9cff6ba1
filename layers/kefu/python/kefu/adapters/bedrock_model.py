"""Claude on Amazon Bedrock through the Converse API: the chat model that writes an answer from
the retrieved knowledge (calling the order tools when it is given them), and the conversation
model that rewrites a follow-up and folds old turns into the summary.

The prompts are `kefu.adapters.claude_prompt`'s, shared with the Anthropic API adapter. The
client is taken as an argument (tests hand in a stubbed one); `create` builds one within a chat
turn's budget (botocore's standard retry mode backs off before retrying a throttled call),
honouring `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` as boto3 does. Every failure of a call becomes
`DependencyUnavailable`, which the chat turn degrades instead of failing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from kefu.adapters.claude_prompt import (
    CHAT_BUDGET,
    MAX_TOKENS,
    ROUND_BUDGET,
    SHORT_BUDGET,
    Prompt,
    answer_prompt,
    parse_reply,
    standalone_prompt,
    summary_prompt,
    tool_failed,
    with_tool_rounds,
)
from kefu.adapters.cloud_embedders import runtime_client
from kefu.errors import DependencyUnavailable
from kefu.ports import AnswerContext, ModelAnswer, Tools, ToolSpec

if TYPE_CHECKING:
    from kefu.models import Turn
    from kefu.text import Language


def prompt_request(prompt: Prompt, *, model_id: str) -> dict[str, Any]:
    """The Converse request for a prompt."""
    return {
        "modelId": model_id,
        "system": [{"text": prompt.system}],
        "messages": [{"role": role, "content": [{"text": text}]} for role, text in prompt.messages],
        "inferenceConfig": {"maxTokens": prompt.max_tokens, "temperature": 0.0},
    }


def tool_config(specs: Sequence[ToolSpec]) -> dict[str, Any]:
    return {
        "tools": [
            {
                "toolSpec": {
                    "name": spec.name,
                    "description": spec.description,
                    "inputSchema": {"json": dict(spec.input_schema)},
                }
            }
            for spec in specs
        ]
    }


def converse_request(
    context: AnswerContext, *, model_id: str, max_tokens: int = MAX_TOKENS
) -> dict[str, Any]:
    """The Converse request for one answer: the earlier turns as alternating messages, then the
    knowledge, the conversation's state and the question; the tools, when given."""
    request = prompt_request(answer_prompt(context, max_tokens=max_tokens), model_id=model_id)
    if context.tools is not None and context.tools.specs:
        request["toolConfig"] = tool_config(context.tools.specs)
    return request


def tool_results(message: dict[str, Any], tools: Tools, used: list[str]) -> dict[str, Any]:
    """The user message answering each `toolUse` block of the model's `message`; the names of
    the tools called are appended to `used`."""
    results = []
    for block in message.get("content", []):
        if "toolUse" not in block:
            continue
        use = block["toolUse"]
        result = tools.call(use["name"], use.get("input") or {})
        used.append(use["name"])
        results.append(
            {
                "toolResult": {
                    "toolUseId": use["toolUseId"],
                    "content": [{"json": result}],
                    "status": "error" if tool_failed(result) else "success",
                }
            }
        )
    if not results:
        raise DependencyUnavailable("Bedrock Converse asked for a tool without naming one")
    return {"role": "user", "content": results}


def _text(response: dict[str, Any]) -> str:
    blocks = response.get("output", {}).get("message", {}).get("content", [])
    return "".join(block["text"] for block in blocks if "text" in block).strip()


class BedrockClaude:
    """A `ChatModel` and `ConversationModel` answering with Claude (or another Converse model)
    on Bedrock."""

    name = "claude"

    def __init__(
        self,
        client: Any,
        *,
        model_id: str,
        max_tokens: int = MAX_TOKENS,
        round_client: Any = None,
        short_client: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`client` makes an answer's first call; `round_client` its tool rounds and
        `short_client` the short calls, each within its budget (`claude_prompt`); both default
        to `client`."""
        self._client = client
        self._round_client = round_client or client
        self._short_client = short_client or client
        self._clock = clock
        self.model_id = model_id
        self.max_tokens = max_tokens

    @classmethod
    def create(
        cls, *, model_id: str, region: str | None = None, max_tokens: int = MAX_TOKENS
    ) -> BedrockClaude:
        return cls(
            runtime_client("bedrock-runtime", CHAT_BUDGET, region=region),
            model_id=model_id,
            max_tokens=max_tokens,
            round_client=runtime_client("bedrock-runtime", ROUND_BUDGET, region=region),
            short_client=runtime_client("bedrock-runtime", SHORT_BUDGET, region=region),
        )

    def _converse(self, request: dict[str, Any], client: Any = None) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response: dict[str, Any] = (client or self._client).converse(**request)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise DependencyUnavailable(f"Bedrock Converse failed: {code}") from exc
        except BotoCoreError as exc:  # timeouts, connection errors
            raise DependencyUnavailable(f"Bedrock Converse failed: {exc}") from exc
        return response

    def answer(self, context: AnswerContext) -> ModelAnswer:
        request = converse_request(context, model_id=self.model_id, max_tokens=self.max_tokens)
        used: list[str] = []
        tools = context.tools

        def next_round(response: dict[str, Any]) -> dict[str, Any]:
            assert tools is not None
            message = response.get("output", {}).get("message", {})
            request["messages"].extend([message, tool_results(message, tools, used)])
            return self._converse(request, self._round_client)

        response = with_tool_rounds(
            lambda: self._converse(request),
            lambda response: tools is not None and response.get("stopReason") == "tool_use",
            next_round,
            clock=self._clock,
            api="Bedrock Converse",
            deadline=context.deadline,
        )
        text, sources = parse_reply(_text(response), context.hits)
        if not text:
            reason = response.get("stopReason", "unknown")
            raise DependencyUnavailable(f"Bedrock Converse returned no text (stop: {reason})")
        return ModelAnswer(text=text, model=self.name, sources=sources, tools_used=tuple(used))

    def _short(self, prompt: Prompt) -> str:
        response = self._converse(
            prompt_request(prompt, model_id=self.model_id), self._short_client
        )
        text = _text(response)
        if not text:
            reason = response.get("stopReason", "unknown")
            raise DependencyUnavailable(f"Bedrock Converse returned no text (stop: {reason})")
        return text

    def standalone_question(
        self, message: str, history: Sequence[Turn], summary: str, language: Language
    ) -> str:
        return self._short(standalone_prompt(message, history, summary, language))

    def summarize(self, summary: str, turns: Sequence[Turn], language: Language) -> str:
        return self._short(summary_prompt(summary, turns, language))
