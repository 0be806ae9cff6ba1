"""Claude through Anthropic's Messages API (the `anthropic` SDK): the same chat and conversation
model as `BedrockClaude`, for a deployment that calls Anthropic directly.

The prompts are `kefu.adapters.claude_prompt`'s; tools travel as `tool_use` / `tool_result`
content blocks. The client is taken as an argument (tests hand in one over a mock transport);
`create` builds one within a chat turn's budget, and the SDK itself honours
`ANTHROPIC_BASE_URL`. The SDK is imported only when this model is built or called, so a chat
function configured for another model never loads it. Every failure of a call becomes
`DependencyUnavailable`, which the chat turn degrades instead of failing.
"""

from __future__ import annotations

import json
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
from kefu.adapters.cloud_embedders import CallBudget
from kefu.errors import DependencyUnavailable
from kefu.ports import AnswerContext, ModelAnswer, Tools, ToolSpec

if TYPE_CHECKING:
    from anthropic import Anthropic
    from anthropic.types import Message

    from kefu.models import Turn
    from kefu.text import Language


def prompt_request(prompt: Prompt, *, model: str) -> dict[str, Any]:
    """The keyword arguments of `messages.create` for a prompt. No `temperature`: the SDK's 1.x
    and later signatures dropped the sampling parameters, and the API accepts only the default
    for models after Claude Opus 4.6; the prompt keeps the answers to the sources instead."""
    return {
        "model": model,
        "max_tokens": prompt.max_tokens,
        "system": prompt.system,
        "messages": [{"role": role, "content": text} for role, text in prompt.messages],
    }


def tool_params(specs: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "name": spec.name,
            "description": spec.description,
            "input_schema": dict(spec.input_schema),
        }
        for spec in specs
    ]


def messages_request(
    context: AnswerContext, *, model: str, max_tokens: int = MAX_TOKENS
) -> dict[str, Any]:
    """The request for one answer: the earlier turns, then the knowledge, the conversation's
    state and the question; the tools, when given."""
    request = prompt_request(answer_prompt(context, max_tokens=max_tokens), model=model)
    if context.tools is not None and context.tools.specs:
        request["tools"] = tool_params(context.tools.specs)
    return request


def _text(message: Message) -> str:
    from anthropic.types import TextBlock

    return "".join(block.text for block in message.content if isinstance(block, TextBlock)).strip()


def _turn_taken(message: Message, tools: Tools, used: list[str]) -> list[dict[str, Any]]:
    """The model's tool-calling message as sent back, then the user message answering each of
    its `tool_use` blocks; the names of the tools called are appended to `used`."""
    from anthropic.types import TextBlock, ToolUseBlock

    said: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, TextBlock) and block.text:
            said.append({"type": "text", "text": block.text})
        elif isinstance(block, ToolUseBlock):
            said.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
            )
            result = tools.call(block.name, block.input)
            used.append(block.name)
            results.append(
                {
                    "type": "tool_result",
                    "tool_use_id": block.id,
                    "content": json.dumps(result, ensure_ascii=False),
                    "is_error": tool_failed(result),
                }
            )
    if not results:
        raise DependencyUnavailable("Anthropic API asked for a tool without naming one")
    return [{"role": "assistant", "content": said}, {"role": "user", "content": results}]


# Worth another attempt within the turn; other errors (400, 401, 404) will not change.
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
RETRY_PAUSE_CAP = 1.0


def _pause(retry_after: str | None) -> float:
    """How long to wait before the retry: what the API asks, within the cap."""
    try:
        asked = float(retry_after) if retry_after else 0.5
    except ValueError:
        asked = 0.5
    return min(max(asked, 0.0), RETRY_PAUSE_CAP)


class AnthropicClaude:
    """A `ChatModel` and `ConversationModel` answering with Claude through Anthropic's API."""

    name = "claude"

    def __init__(
        self,
        client: Anthropic,
        *,
        model: str,
        max_tokens: int = MAX_TOKENS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._clock = clock
        self.model = model
        self.max_tokens = max_tokens

    @classmethod
    def create(cls, *, api_key: str, model: str, max_tokens: int = MAX_TOKENS) -> AnthropicClaude:
        """A client within a chat turn's budget (the SDK retries a throttled or failed call
        after a back-off); its base URL is `ANTHROPIC_BASE_URL` when set."""
        import anthropic

        client = anthropic.Anthropic(
            api_key=api_key,
            timeout=anthropic.Timeout(
                CHAT_BUDGET.read_timeout, connect=CHAT_BUDGET.connect_timeout
            ),
            max_retries=0,  # `_create` retries, with its pause capped
        )
        return cls(client, model=model, max_tokens=max_tokens)

    def _create(self, request: dict[str, Any], budget: CallBudget | None = None) -> Message:
        """One call within `budget` (`CHAT_BUDGET` if not given). A throttled, overloaded or
        failed call is retried here, after a pause of at most `RETRY_PAUSE_CAP` seconds: the
        SDK's own retries would wait out a `Retry-After` of any length."""
        import anthropic

        budget = budget or CHAT_BUDGET
        client = self._client.with_options(
            timeout=anthropic.Timeout(budget.read_timeout, connect=budget.connect_timeout),
            max_retries=0,
        )
        for attempt in range(budget.max_attempts):
            last = attempt == budget.max_attempts - 1
            try:
                message: Message = client.messages.create(**request)
                return message
            except anthropic.APIStatusError as exc:  # 429 throttled, 5xx, 529 overloaded, 4xx
                if last or exc.status_code not in RETRIED_STATUSES:
                    raise DependencyUnavailable(
                        f"Anthropic API failed: {exc.status_code} {type(exc).__name__}"
                    ) from exc
                time.sleep(_pause(exc.response.headers.get("retry-after")))
            except (anthropic.APIConnectionError, anthropic.APITimeoutError) as exc:
                if last:
                    raise DependencyUnavailable(
                        f"Anthropic API failed: {type(exc).__name__}"
                    ) from exc
            except anthropic.APIError as exc:  # an unreadable response
                raise DependencyUnavailable(f"Anthropic API failed: {type(exc).__name__}") from exc
        raise DependencyUnavailable("Anthropic API failed")  # budget.max_attempts < 1

    def answer(self, context: AnswerContext) -> ModelAnswer:
        request = messages_request(context, model=self.model, max_tokens=self.max_tokens)
        used: list[str] = []
        tools = context.tools

        def next_round(message: Message) -> Message:
            assert tools is not None
            request["messages"].extend(_turn_taken(message, tools, used))
            return self._create(request, ROUND_BUDGET)

        message = with_tool_rounds(
            lambda: self._create(request),
            lambda message: tools is not None and message.stop_reason == "tool_use",
            next_round,
            clock=self._clock,
            api="Anthropic API",
            deadline=context.deadline,
        )
        text, sources = parse_reply(_text(message), context.hits)
        if not text:
            raise DependencyUnavailable(
                f"Anthropic API returned no text (stop: {message.stop_reason})"
            )
        return ModelAnswer(text=text, model=self.name, sources=sources, tools_used=tuple(used))

    def _short(self, prompt: Prompt) -> str:
        message = self._create(prompt_request(prompt, model=self.model), SHORT_BUDGET)
        text = _text(message)
        if not text:
            raise DependencyUnavailable(
                f"Anthropic API returned no text (stop: {message.stop_reason})"
            )
        return text

    def standalone_question(
        self, message: str, history: Sequence[Turn], summary: str, language: Language
    ) -> str:
        return self._short(standalone_prompt(message, history, summary, language))

    def summarize(self, summary: str, turns: Sequence[Turn], language: Language) -> str:
        return self._short(summary_prompt(summary, turns, language))
