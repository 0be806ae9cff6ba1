"""Claude on Amazon Bedrock through the Converse API: the chat model that writes an answer from
the retrieved knowledge.

The system prompt is a versioned template file (`kefu/prompts/system-<version>.txt`). The
retrieved passages and the customer's words travel as delimited, escaped data inside the user
message, so text in them can neither close its delimiter nor pass for an instruction. The client
is taken as an argument (tests hand in a stubbed one); `create` builds one within a chat turn's
budget, honouring `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` as boto3 does. Every failure of the call
becomes `DependencyUnavailable`, which the chat turn degrades instead of failing.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape, quoteattr

from kefu.adapters.cloud_embedders import CallBudget, runtime_client
from kefu.errors import DependencyUnavailable
from kefu.ports import AnswerContext, ModelAnswer

if TYPE_CHECKING:
    from kefu.text import Language

PROMPT_VERSION = "v1"
PROMPTS = Path(__file__).parents[1] / "prompts"
LANGUAGE_NAMES: dict[Language, str] = {"zh": "Simplified Chinese", "en": "English"}
# Within API Gateway's 29 seconds, after retrieval: two attempts of at most 10 s each; botocore's
# standard retry mode backs off before retrying a throttled call.
CHAT_BUDGET = CallBudget(connect_timeout=2.0, read_timeout=10.0, max_attempts=2, throttle_retries=0)
MAX_TOKENS = 512
# How many earlier turns the model sees (each a customer message and the answer it got).
HISTORY_TURNS = 6


@cache
def _template(version: str) -> str:
    return (PROMPTS / f"system-{version}.txt").read_text(encoding="utf-8")


def system_prompt(language: Language, version: str = PROMPT_VERSION) -> str:
    return _template(version).format(language=LANGUAGE_NAMES[language])


def user_content(context: AnswerContext) -> str:
    """The retrieved knowledge and the customer's message, each in its delimiter, escaped."""
    sources = "\n".join(
        f"<source id={quoteattr(hit.chunk.id)} title={quoteattr(hit.chunk.title)}>"
        f"{escape(hit.chunk.text)}</source>"
        for hit in context.hits
    )
    return (
        f"<knowledge>\n{sources}\n</knowledge>\n"
        f"<customer_message>{escape(context.question)}</customer_message>"
    )


def converse_request(
    context: AnswerContext, *, model_id: str, max_tokens: int = MAX_TOKENS
) -> dict[str, Any]:
    """The Converse request for one answer: the earlier turns as alternating messages, then the
    knowledge and the question."""
    messages: list[dict[str, Any]] = []
    for turn in context.history[-HISTORY_TURNS:]:
        messages.append({"role": "user", "content": [{"text": turn.message}]})
        messages.append({"role": "assistant", "content": [{"text": turn.answer}]})
    messages.append({"role": "user", "content": [{"text": user_content(context)}]})
    return {
        "modelId": model_id,
        "system": [{"text": system_prompt(context.language)}],
        "messages": messages,
        "inferenceConfig": {"maxTokens": max_tokens, "temperature": 0.0},
    }


class BedrockClaude:
    """A `ChatModel` answering with Claude (or another Converse model) on Bedrock."""

    name = "claude"

    def __init__(self, client: Any, *, model_id: str, max_tokens: int = MAX_TOKENS) -> None:
        self._client = client
        self.model_id = model_id
        self.max_tokens = max_tokens

    @classmethod
    def create(
        cls, *, model_id: str, region: str | None = None, max_tokens: int = MAX_TOKENS
    ) -> BedrockClaude:
        client = runtime_client("bedrock-runtime", CHAT_BUDGET, region=region)
        return cls(client, model_id=model_id, max_tokens=max_tokens)

    def answer(self, context: AnswerContext) -> ModelAnswer:
        from botocore.exceptions import BotoCoreError, ClientError

        request = converse_request(context, model_id=self.model_id, max_tokens=self.max_tokens)
        try:
            response = self._client.converse(**request)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise DependencyUnavailable(f"Bedrock Converse failed: {code}") from exc
        except BotoCoreError as exc:  # timeouts, connection errors
            raise DependencyUnavailable(f"Bedrock Converse failed: {exc}") from exc
        blocks = response.get("output", {}).get("message", {}).get("content", [])
        text = "".join(block["text"] for block in blocks if "text" in block).strip()
        if not text:
            reason = response.get("stopReason", "unknown")
            raise DependencyUnavailable(f"Bedrock Converse returned no text (stop: {reason})")
        return ModelAnswer(text=text, model=self.name)
