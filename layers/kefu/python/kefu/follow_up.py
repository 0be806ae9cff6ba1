"""Follow-ups without a model: "那运费呢？" after a question about returns asks about return
shipping. A short message that reads as a continuation (an opener such as "那" or "and what
about", an ending such as "呢", or a pronoun for what was just discussed) is retrieved within
the topic (the KB category) of the conversation's last answered turn, alone and then read after
that turn's question."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from kefu.models import Turn

# Openers, endings and pronouns that continue the previous question rather than start one.
_CONTINUATION = re.compile(
    r"^\s*(那|那么|那如果|如果|要是|还有|另外|然后|and|and what about|what about|how about|"
    r"what if|also|then)\b|"
    r"^\s*(那|那么|还有|另外|如果|要是|万一)|呢\s*[？?]?\s*$|"
    r"它|他们|这个|那个|这种|那种|\b(it|its|they|them|their|that one|this one|those|these)\b",
    re.IGNORECASE,
)
# Intents that are not a KB category: nothing to continue within.
_NOT_TOPICS = frozenset({"unknown", "small_talk", "human_agent", "general"})
_MAX_CJK_CHARS = 16
_MAX_WORDS = 10


@dataclass(frozen=True, slots=True)
class FollowUp:
    topic: str  # the KB category to retrieve within
    previous: str  # the question it follows up (masked, as stored)


def follow_up_of(message: str, history: Sequence[Turn]) -> FollowUp | None:
    """What `message` follows up, when it continues the last answered turn."""
    last = next(
        (t for t in reversed(history) if t.outcome == "answered" and t.intent not in _NOT_TOPICS),
        None,
    )
    if last is None or not _CONTINUATION.search(message):
        return None
    cjk = sum("\u4e00" <= char <= "\u9fff" for char in message)
    if cjk > _MAX_CJK_CHARS or (not cjk and len(message.split()) > _MAX_WORDS):
        return None
    return FollowUp(topic=last.intent, previous=last.message)
