"""Retrieval and the answer-or-decline decision, shared by the chat pipeline and the evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kefu.errors import ConfigurationError
from kefu.models import SearchHit
from kefu.ports import Embedder, KnowledgeIndex, SearchQuery
from kefu.text import Language

DecisionKind = Literal["faq", "passages", "decline"]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Minimum similarity for an FAQ entry to answer directly, and for passages to be used."""

    faq: float
    passage: float


# The FAQ thresholds are calibrated on the sample knowledge base's dev set
# (`python -m kb_ingest.evaluate --sample --calibrate-sample`); an enterprise recalibrates on its
# own questions (`--kb ... --queries ... --calibrate DEV.jsonl`). The e5 passage threshold is the
# lowest at which no uncovered question of the sample's sets is answered from a passage.
DEFAULT_THRESHOLDS: dict[str, Thresholds] = {
    "multilingual-e5-small-q4": Thresholds(faq=0.892, passage=0.87),
    "hashing-v1": Thresholds(faq=0.213, passage=0.45),
}


@dataclass(frozen=True, slots=True)
class Decision:
    kind: DecisionKind
    hits: tuple[SearchHit, ...]
    confidence: float

    @property
    def best(self) -> SearchHit | None:
        return self.hits[0] if self.hits else None


class Retriever:
    """Finds what the knowledge base says about a question, and whether that is enough."""

    def __init__(
        self,
        *,
        embedder: Embedder,
        index: KnowledgeIndex,
        thresholds: Thresholds | None = None,
        limit: int = 5,
    ) -> None:
        self.embedder = embedder
        self.index = index
        # Similarities are not comparable across embedders: one without calibrated defaults
        # (Titan, a SageMaker model) must be given its thresholds; guessing would answer what
        # it should decline.
        chosen = thresholds or DEFAULT_THRESHOLDS.get(embedder.name)
        if chosen is None:
            raise ConfigurationError(
                f"no calibrated thresholds for the {embedder.name} embedder: set "
                "KEFU_FAQ_THRESHOLD and KEFU_PASSAGE_THRESHOLD (python -m kb_ingest.evaluate "
                "--calibrate measures the first)"
            )
        self.thresholds = chosen
        self.limit = limit

    def search(
        self, question: str, *, language: Language | None, tenant: str, limit: int | None = None
    ) -> list[SearchHit]:
        vector = self.embedder.embed_queries([question])[0]
        query = SearchQuery(
            text=question,
            vector=vector,
            language=language,
            tenant=tenant,
            limit=limit or self.limit,
        )
        return self.index.search(query)

    def decide_on(self, hits: list[SearchHit]) -> Decision:
        """Answer from the best FAQ entry, from passages, or decline: a pure function of hits."""
        faqs = [hit for hit in hits if hit.chunk.kind == "faq"]
        passages = [hit for hit in hits if hit.chunk.kind == "passage"]
        outside = [hit for hit in hits if hit.chunk.kind == "out_of_scope"]
        # An out-of-scope example closer to the question than what would answer it: decline.
        in_scope = faqs[:1] or passages
        if outside and max(h.nearest for h in outside) >= max(
            (h.nearest for h in in_scope), default=-1.0
        ):
            return Decision("decline", (), _confidence(faqs[0]) if faqs else 0.0)
        if faqs and faqs[0].dense >= self.thresholds.faq:
            return Decision("faq", (faqs[0], *passages[:2]), _confidence(faqs[0]))
        good = [hit for hit in passages if hit.dense >= self.thresholds.passage]
        if good:
            return Decision("passages", tuple(good[:3]), _confidence(good[0]))
        best = hits[0] if hits else None
        return Decision("decline", tuple(hits[:3]), _confidence(best) if best else 0.0)

    def decide(self, question: str, *, language: Language | None, tenant: str) -> Decision:
        return self.decide_on(self.search(question, language=language, tenant=tenant))


def _confidence(hit: SearchHit) -> float:
    return round(min(1.0, max(0.0, hit.dense)), 4)
