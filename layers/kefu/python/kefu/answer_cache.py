"""The answer cache: what a context-free question was answered with, for the next customer
who asks it.

A customer-service stream is Zipf-shaped: a few questions make most of the traffic. Their
answers come from the cache (Redis in AWS, an in-process LRU under `make run`) without a
retrieval or a model call. Only the answer to a question that stands alone is cached: no
follow-up, no order data, no personal data (the message is cached only when masking changed
nothing), and an answer grounded in the knowledge base. The key names the tenant, the
language, the KB version and the normalised question, so a KB version bump makes every older
entry unreachable (they expire by their TTL).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from pydantic import BaseModel, ConfigDict

from kefu.models import ChatResponse, Source
from kefu.text import Language

# The trailing punctuation and spacing that do not change a question.
_SPACE = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s?？!！.。,，~～…]+$")
KEY_PREFIX = "kefu:answer:v1"


def normalise(question: str) -> str:
    """The question as the cache compares it: NFKC (full-width to half-width), case-folded,
    spacing collapsed, trailing punctuation dropped."""
    text = unicodedata.normalize("NFKC", question).casefold()
    text = _SPACE.sub(" ", text).strip()
    return _TRAILING.sub("", text)


def cache_key(*, tenant: str, language: str, kb_version: str, question: str) -> str:
    digest = hashlib.sha256(normalise(question).encode("utf-8")).hexdigest()
    return f"{KEY_PREFIX}:{tenant}:{language}:{kb_version}:{digest}"


class CachedAnswer(BaseModel):
    """What a cached turn answers with: the response without its session and turn."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    answer: str
    language: Language
    sources: list[Source]
    intent: str
    confidence: float
    model: str

    @classmethod
    def of(cls, response: ChatResponse) -> CachedAnswer:
        return cls.model_validate(response.model_dump(include=set(cls.model_fields)))

    def response(self, *, session_id: str, turn_id: str) -> ChatResponse:
        return ChatResponse(
            session_id=session_id, turn_id=turn_id, outcome="answered", **self.model_dump()
        )


def cacheable(response: ChatResponse) -> bool:
    """An answer worth keeping: answered from the knowledge base (its sources named)."""
    return response.outcome == "answered" and bool(response.sources) and response.handover is None
