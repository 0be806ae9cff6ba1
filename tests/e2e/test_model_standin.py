"""The local stack answering with Claude, through each API Claude is reached by (Bedrock's
Converse API, Anthropic's Messages API), against a stand-in server that replays the API's
responses and records what it was sent: what reaches the model, and what the customer gets when
the model API fails."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kefu.adapters.claude_prompt import system_prompt
from tests.e2e.conftest import STARTUP_LIMIT_S, LocalStack, start, stop
from tests.e2e.model_standin import SENTENCE, ModelStandIn, first_source_id
from tests.e2e.test_local_stack import call, chat

# A stack's start may be the session's first, which indexes the sample KB.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(STARTUP_LIMIT_S + 60)]

PHONE = "13812345678"
# Answered from a passage of the warranty policy, not from a confident FAQ entry (which would be
# answered without the model).
PASSAGE_QUESTION = (
    "Headphones delivered on the 1st stopped working on the 10th, can they be replaced or "
    f"repaired? My number is {PHONE}."
)
API_KEY = "test-anthropic-key"


@dataclass
class ClaudeStack:
    """A local stack answering with Claude through `api` ("converse" or "messages")."""

    api: str
    stack: LocalStack


@pytest.fixture(scope="module")
def standin() -> Iterator[ModelStandIn]:
    with ModelStandIn() as server:
        yield server


@pytest.fixture(autouse=True)
def _default_replies(standin: ModelStandIn) -> None:
    standin.reset()


def _environment(model: str, url: str) -> dict[str, str]:
    if model == "bedrock":
        return {
            "KEFU_MODEL": "bedrock",
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
        }
    return {"KEFU_MODEL": "anthropic", "ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": url}


@pytest.fixture(scope="module", params=["bedrock", "anthropic"])
def claude(
    request: pytest.FixtureRequest, standin: ModelStandIn, data_dir: Path
) -> Iterator[ClaudeStack]:
    """The local stack with `KEFU_MODEL` set to each way of reaching Claude, pointed at the
    stand-in; it shares the session's data directory, so the index built once is reused."""
    model: str = request.param
    process, stack = start(data_dir, env=_environment(model, standin.url))
    yield ClaudeStack(api="converse" if model == "bedrock" else "messages", stack=stack)
    stop(process)


def test_a_passage_question_is_answered_by_claude_from_the_retrieved_knowledge(
    claude: ClaudeStack, standin: ModelStandIn
) -> None:
    reply = chat(claude.stack, PASSAGE_QUESTION)

    assert (reply["outcome"], reply["model"]) == ("answered", "claude")
    # The stand-in's text, without the line naming its sources (after the AI's disclosure).
    assert reply["answer"].endswith(SENTENCE)
    assert "sources>" not in reply["answer"]
    sent = standin.requests
    assert sent
    assert {request.api for request in sent} == {claude.api}
    asked = sent[-1]
    assert asked.system == system_prompt("en")
    prompt = asked.last_user_text
    assert "<knowledge>" in prompt
    assert "<source id=" in prompt
    assert "Headphones delivered on the 1st" in prompt
    # The source the stand-in cited is the one the customer is shown.
    assert [source["id"] for source in reply["sources"]] == [first_source_id(prompt)]
    # The customer's phone number reached no model API, in no part of any request.
    for request in sent:
        assert PHONE not in request.raw
        assert not any(PHONE in value for value in request.headers.values())
    if claude.api == "messages":
        assert any(API_KEY in value for value in asked.headers.values())


@pytest.mark.parametrize("status", [500, 429])
def test_a_failing_model_api_hands_the_question_to_a_human(
    claude: ClaudeStack, standin: ModelStandIn, status: int
) -> None:
    standin.fail_with(status)  # every call, retries included

    code, reply = call(
        claude.stack, "POST", "/v1/chat", json.dumps({"message": PASSAGE_QUESTION}).encode()
    )

    assert code == 200, reply
    # No fallback model answers: the question goes to a human, and the reply says why
    assert reply["outcome"] == "handed_over"
    assert reply["handover"]["trigger"] == "model_failure"
    assert reply["handover"]["ticket_id"]
    assert reply["model"] != "claude"
    assert "human agent" in reply["answer"]
    assert standin.requests  # the model was asked: the decline is the model's failure's
