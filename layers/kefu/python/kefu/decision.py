"""Whether the knowledge base answers a question, and from what: a pure function of the ranked
hits and one set of thresholds, which one function resolves from the settings.

An out-of-scope example closer to the question than what would answer it declines it. Otherwise
the best FAQ entry answers when it is near the question and is the entry meant: ranked by the
tenant's FAQ head, its fit (`SearchHit.fit`: the similarity relative to how alike its own
questions are) must reach `fit`, since a head always prefers one of its candidates, even for a
question near none, and the head's own probability must reach `head`, since an uncovered
question spreads it over several neighbours; without a head, its similarity must reach
`similarity`. Failing that, passages as similar as `passage` answer, and else it declines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from kefu.errors import ConfigurationError
from kefu.models import SearchHit

if TYPE_CHECKING:
    from kefu.settings import Settings

DecisionKind = Literal["faq", "passages", "decline"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Thresholds:
    """What an FAQ entry needs to answer: its `fit` and the head's probability (`head`) where
    the tenant's FAQ head ranked it, else its `similarity`; and what a passage's similarity
    needs to be used (`passage`)."""

    fit: float
    head: float
    similarity: float
    passage: float


# Calibrated on the sample KB's dev set (`python -m kb_ingest.evaluate --sample
# --calibrate-sample`, and with `--no-head` for `similarity`); `passage` is the lowest at which
# no uncovered question of the sample's sets is answered from a passage. Similarities are not
# comparable across embedders: any other embedder (Titan, a SageMaker model, a tuned e5) must be
# given its thresholds.
BUILT_IN: dict[str, Thresholds] = {
    "multilingual-e5-small-q4": Thresholds(fit=0.837, head=0.277, similarity=0.893, passage=0.87),
    "hashing-v1": Thresholds(fit=0.168, head=0.398, similarity=0.214, passage=0.45),
}
# What an evaluation of an embedder with no thresholds starts from: every best FAQ entry
# answers and no passage does, so the ranking figures hold until calibration sets them.
UNCALIBRATED = Thresholds(fit=0.0, head=0.0, similarity=0.0, passage=1.0)


def resolve_thresholds(
    settings: Settings, embedder: str, *, fallback: Thresholds | None = None
) -> Thresholds:
    """The thresholds for `embedder`: each one the settings give (the stage config sets them
    as `KEFU_*_THRESHOLD`), else the embedder's built-in one, else `fallback`'s. A FAQ
    threshold given alone also holds for the similarity. Raises ConfigurationError when one is
    still missing: guessing would answer what should be declined."""
    base = BUILT_IN.get(embedder) or fallback
    given_fit = settings.faq_threshold
    fit = _first(given_fit, base.fit if base else None)
    head = _first(settings.head_threshold, base.head if base else None)
    passage = _first(settings.passage_threshold, base.passage if base else None)
    similarity = _first(settings.similarity_threshold, given_fit, base.similarity if base else None)
    if fit is None or head is None or passage is None or similarity is None:
        raise ConfigurationError(
            f"no calibrated thresholds for the {embedder} embedder: set "
            "KEFU_FAQ_THRESHOLD, KEFU_HEAD_THRESHOLD and KEFU_PASSAGE_THRESHOLD "
            "(python -m kb_ingest.evaluate --calibrate measures the first two)"
        )
    return Thresholds(fit=fit, head=head, similarity=similarity, passage=passage)


def _first(*values: float | None) -> float | None:
    return next((value for value in values if value is not None), None)


@dataclass(frozen=True, slots=True)
class Decision:
    kind: DecisionKind
    hits: tuple[SearchHit, ...]
    confidence: float

    @property
    def best(self) -> SearchHit | None:
        return self.hits[0] if self.hits else None


def decide(hits: Sequence[SearchHit], thresholds: Thresholds) -> Decision:
    """Answer from the best FAQ entry (with the two best passages beside it), from the passages
    as similar as `thresholds.passage`, or decline."""
    faqs = [hit for hit in hits if hit.chunk.kind == "faq"]
    passages = [hit for hit in hits if hit.chunk.kind == "passage"]
    outside = [hit for hit in hits if hit.chunk.kind == "out_of_scope"]
    in_scope = faqs[:1] or passages
    if outside and max(h.nearest for h in outside) >= max(
        (h.nearest for h in in_scope), default=-1.0
    ):
        return Decision("decline", (), confidence(faqs[0]) if faqs else 0.0)
    if faqs and answers(faqs[0], thresholds):
        return Decision("faq", (faqs[0], *passages[:2]), confidence(faqs[0]))
    good = [hit for hit in passages if hit.dense >= thresholds.passage]
    if good:
        return Decision("passages", tuple(good[:3]), confidence(good[0]))
    return Decision("decline", tuple(hits[:3]), confidence(hits[0]) if hits else 0.0)


def answers(faq: SearchHit, thresholds: Thresholds) -> bool:
    """Whether an FAQ entry, ranked first, is near enough the question to answer it."""
    if faq.fit is None or faq.probability is None:
        return faq.dense >= thresholds.similarity
    return faq.fit >= thresholds.fit and faq.probability >= thresholds.head


def confidence(hit: SearchHit) -> float:
    """The API's `confidence`: the FAQ head's probability for an entry it ranked, else the
    similarity."""
    value = hit.probability if hit.probability is not None else hit.dense
    return round(min(1.0, max(0.0, value)), 4)
