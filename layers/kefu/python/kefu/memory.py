"""What a conversation remembers: a sliding window of recent turns within a token budget, a
rolling summary of the turns that left it, and what the customer is trying to do (the intent,
a KB category) with what is known about it (the slots: order id, product, reason).

The window keeps the newest turns whose tokens fit the budget (always the last `keep_turns`);
a turn that leaves it is folded into the summary, by the model when it can summarise
(`ConversationModel`), else extractively (the question and the first sentence of its answer).
The summary is bounded too, so the stored session is, however long the conversation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from kefu.errors import DependencyUnavailable
from kefu.models import Session, Turn
from kefu.observability import logger
from kefu.ports import ConversationModel
from kefu.text import Language

# Intents that are not what the customer is trying to do, so they do not replace it.
NOT_INTENTS = frozenset({"unknown", "small_talk", "human_agent", "general", ""})
SLOT_NAMES = ("order_id", "product", "reason")

_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[A-Za-z0-9]+|[^\sA-Za-z0-9]")
_SENTENCE_END = re.compile(r"(?<=[。！？!?])|(?<=\.)\s")


@lru_cache(maxsize=8192)
def count_tokens(text: str) -> int:
    """An estimate of a text's model tokens: a CJK character, a word or a punctuation mark
    each (close to Claude's count for Chinese; a little over for English, which is safe)."""
    return len(_TOKEN.findall(text))


def turn_tokens(turn: Turn) -> int:
    return count_tokens(turn.message) + count_tokens(turn.answer)


@dataclass(frozen=True, slots=True)
class MemoryPolicy:
    budget_tokens: int = 2048  # the window's turns, verbatim
    keep_turns: int = 2  # kept verbatim whatever their size
    summary_tokens: int = 512  # the rolling summary's bound


def _gist(turn: Turn, limit: int = 80) -> str:
    """One line for the extractive summary: the question and the answer's first sentence."""
    answer = " ".join(turn.answer.split())
    first = _SENTENCE_END.split(answer, maxsplit=1)[0]
    question = " ".join(turn.message.split())
    return f"- {question[:limit]} → {first[:limit]}"


def _bounded(summary: str, limit: int) -> str:
    """The summary's newest lines that fit `limit` tokens."""
    kept: list[str] = []
    total = 0
    for line in reversed(summary.splitlines()):
        total += count_tokens(line)
        if total > limit and kept:
            break
        kept.append(line)
    return "\n".join(reversed(kept))


class Memory:
    """Applies a turn to a session: the window, the summary, the intent and the slots."""

    def __init__(
        self, policy: MemoryPolicy | None = None, summarizer: ConversationModel | None = None
    ) -> None:
        self.policy = policy or MemoryPolicy()
        self.summarizer = summarizer

    def remember(
        self,
        session: Session,
        turn: Turn,
        *,
        intent: str,
        slots: Mapping[str, str],
        handed_over: bool,
        use_model: bool = True,
    ) -> Session:
        """The session after `turn` (its `version` still the one read: the store moves it).
        Without `use_model` (the turn has no time left for it) the summary is extractive."""
        turns = [*session.turns, turn]
        left: list[Turn] = []
        total = sum(turn_tokens(t) for t in turns)
        while len(turns) > self.policy.keep_turns and total > self.policy.budget_tokens:
            left.append(turns.pop(0))
            total -= turn_tokens(left[-1])
        summary = (
            self.fold(session.summary, left, turn.language, use_model=use_model)
            if left
            else session.summary
        )
        return replace(
            session,
            turns=turns,
            summary=summary,
            intent=intent,
            slots=dict(slots),
            handed_over=handed_over,
            turn_count=session.turn_count + 1,
        )

    def fold(
        self, summary: str, turns: Sequence[Turn], language: Language, *, use_model: bool = True
    ) -> str:
        """`summary` with `turns` folded in, within its bound."""
        if self.summarizer is not None and use_model:
            try:
                folded = self.summarizer.summarize(summary, turns, language)
                return _bounded(folded.strip(), self.policy.summary_tokens)
            except DependencyUnavailable:
                logger.warning("summariser unavailable; summarising extractively")
        lines = [summary] if summary else []
        lines.extend(_gist(turn) for turn in turns)
        return _bounded("\n".join(lines), self.policy.summary_tokens)


def carried_intent(previous: str, turn_intent: str) -> str:
    """What the customer is trying to do after a turn: the turn's KB category if it has one,
    else what they were trying to do before."""
    return previous if turn_intent in NOT_INTENTS else turn_intent


def carried_slots(
    previous: Mapping[str, str], found: Mapping[str, str], *, intent_changed: bool
) -> dict[str, str]:
    """The slots after a turn: what it found over what was known. A new intent keeps the
    order and the product (often the same order) but not the reason, which was the old one's;
    another order drops the old one's product and reason."""
    other_order = found.get("order_id") not in (None, "", previous.get("order_id"))
    dropped = {"product", "reason"} if other_order else {"reason"} if intent_changed else set()
    slots = {k: v for k, v in previous.items() if k not in dropped}
    slots.update({k: v for k, v in found.items() if v})
    return slots
