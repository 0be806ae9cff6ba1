"""Follow-ups without a model: "那运费呢？" after a question about returns asks about return
shipping. A short message that reads as a continuation is retrieved within the topic (the KB
category) of the conversation's last answered turn."""

from __future__ import annotations

import re
from collections.abc import Sequence

from kefu.models import Turn

# Openers and endings that continue the previous question rather than start a new one.
_CONTINUATION = re.compile(
    r"^\s*(那|那么|那如果|还有|另外|然后|and|and what about|what about|how about|also)\b|"
    r"^\s*(那|那么|还有|另外)|呢\s*[？?]?\s*$",
    re.IGNORECASE,
)
# Intents that are not a KB category: nothing to continue within.
_NOT_TOPICS = frozenset({"unknown", "small_talk", "human_agent", "general"})
_MAX_CJK_CHARS = 12
_MAX_WORDS = 7


def follow_up_topic(message: str, history: Sequence[Turn]) -> str | None:
    """The KB category to retrieve `message` within, when it follows up the last answered turn."""
    last = next(
        (t for t in reversed(history) if t.outcome == "answered" and t.intent not in _NOT_TOPICS),
        None,
    )
    if last is None or not _CONTINUATION.search(message):
        return None
    cjk = sum("\u4e00" <= char <= "\u9fff" for char in message)
    if cjk > _MAX_CJK_CHARS or (not cjk and len(message.split()) > _MAX_WORDS):
        return None
    return last.intent
