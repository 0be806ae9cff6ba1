"""Retrieval and the answer-or-decline decision, shared by the chat pipeline and the evaluation."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from kefu.errors import ConfigurationError, DependencyUnavailable
from kefu.head import UNREADABLE, FaqHead, Ranked
from kefu.models import SearchHit
from kefu.observability import logger
from kefu.ports import Embedder, KnowledgeIndex, SearchQuery
from kefu.text import Language

DecisionKind = Literal["faq", "passages", "decline"]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What an FAQ entry needs to answer directly: a fit (`faq`: with the tenant's FAQ head,
    the similarity relative to how alike the entry's questions are, `SearchHit.fit`) or,
    where there is no fit (no head, or one stored without the spread), a similarity
    (`similarity`; None: the `faq` value), and with the head, the head's probability (`head`);
    and the similarity passages need to be used (`passage`)."""

    faq: float
    passage: float
    head: float
    similarity: float | None = None


# The FAQ and head thresholds are calibrated on the sample knowledge base's dev set with its
# head (`python -m kb_ingest.evaluate --sample --calibrate-sample`), where the FAQ threshold
# applies to the fit; the similarity threshold, for a tenant without a head, the same way
# without it (`--no-head`). An enterprise recalibrates on its own questions (`--kb ...
# --queries ... --calibrate DEV.jsonl`, with `--no-head` for the similarity threshold).
# The e5 passage threshold is the lowest at which no uncovered question of the sample's sets is
# answered from a passage.
DEFAULT_THRESHOLDS: dict[str, Thresholds] = {
    "multilingual-e5-small-q4": Thresholds(faq=0.837, passage=0.87, head=0.277, similarity=0.893),
    "hashing-v1": Thresholds(faq=0.168, passage=0.45, head=0.398, similarity=0.214),
}
# How many of the index's best chunks are fetched for the FAQ head to re-rank their FAQ entries.
HEAD_CANDIDATES = 20
# How often a retriever asks whether the KB version moved on (and the head with it).
HEAD_REFRESH_SECONDS = 30.0


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
        use_head: bool = True,
        head_refresh_seconds: float = HEAD_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
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
                "KEFU_FAQ_THRESHOLD, KEFU_HEAD_THRESHOLD and KEFU_PASSAGE_THRESHOLD "
                "(python -m kb_ingest.evaluate --calibrate measures the first two)"
            )
        self.thresholds = chosen
        self.limit = limit
        self.use_head = use_head
        self.head_refresh_seconds = head_refresh_seconds
        self._clock = clock
        # tenant -> (when the version was last read, that version, the head read at it)
        self._heads: dict[str, tuple[float, str, FaqHead | None]] = {}

    def head(self, tenant: str) -> FaqHead | None:
        """The tenant's FAQ head: read again when the KB version has moved on, which is asked
        at most every `head_refresh_seconds`. The head is optional: when it cannot be read
        (the index unavailable, a damaged or newer-format document), questions are ranked by
        similarity, and the chat turn goes on."""
        now = self._clock()
        cached = self._heads.get(tenant)
        if cached is not None and now - cached[0] < self.head_refresh_seconds:
            return cached[2]
        try:
            version = self.index.version
            if cached is not None and cached[1] == version:
                self._heads[tenant] = (now, version, cached[2])
                return cached[2]
            body = self.index.load_head(tenant)
        except DependencyUnavailable:
            logger.warning("FAQ head unavailable; ranking by similarity", extra={"tenant": tenant})
            return cached[2] if cached is not None else None
        try:
            head = FaqHead.from_bytes(body) if body else None
        except UNREADABLE:
            logger.exception("FAQ head unreadable; ranking by similarity", extra={"tenant": tenant})
            head = None
        if head is not None and head.dim != self.embedder.dim:
            head = None  # trained with another embedder: retraining at the next ingest fixes it
        self._heads[tenant] = (now, version, head)
        return head

    def search(
        self, question: str, *, language: Language | None, tenant: str, limit: int | None = None
    ) -> list[SearchHit]:
        """The best chunks for a question; FAQ entries ordered by the head's logits plus their
        similarity where it knows them all (`SearchHit.probability` then set to the head's own
        probability), else by similarity."""
        vector = self.embedder.embed_queries([question])[0]
        limit = limit or self.limit
        head = self.head(tenant) if self.use_head else None
        query = SearchQuery(
            text=question,
            vector=vector,
            language=language,
            tenant=tenant,
            limit=max(limit, HEAD_CANDIDATES) if head else limit,
        )
        hits = self.index.search(query)
        if head is not None:
            faqs = [hit for hit in hits if hit.chunk.kind == "faq"]
            among = [hit.chunk.id for hit in faqs]
            # The order combines the head with the similarity and BM25 (each right where the
            # others err); whether to answer is the head's own view, which spreads its probability
            # over the candidates of a question it was not trained for (declines measured in
            # the README).
            ranked = head.rank(
                vector, among, [hit.dense for hit in faqs], [hit.lexical for hit in faqs]
            )
            if ranked is not None:
                hits = _rerank(hits, ranked)
        return hits[:limit]

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
        if faqs and self._confident(faqs[0]):
            return Decision("faq", (faqs[0], *passages[:2]), _confidence(faqs[0]))
        good = [hit for hit in passages if hit.dense >= self.thresholds.passage]
        if good:
            return Decision("passages", tuple(good[:3]), _confidence(good[0]))
        best = hits[0] if hits else None
        return Decision("decline", tuple(hits[:3]), _confidence(best) if best else 0.0)

    def _confident(self, hit: SearchHit) -> bool:
        # The fit says whether the question is near the entry at all (a head always
        # prefers one of its candidates, even for a question near none); the head's probability
        # whether it is this entry rather than a neighbour.
        if hit.similarity < self._needed(hit):
            return False
        return hit.probability is None or hit.probability >= self.thresholds.head

    def _needed(self, hit: SearchHit) -> float:
        """The threshold `hit.similarity` is compared with: the FAQ one for a fit, the
        similarity one (where set) for a similarity."""
        if hit.fit is not None or self.thresholds.similarity is None:
            return self.thresholds.faq
        return self.thresholds.similarity

    def decide(self, question: str, *, language: Language | None, tenant: str) -> Decision:
        return self.decide_on(self.search(question, language=language, tenant=tenant))


def _rerank(hits: list[SearchHit], ranked: Ranked) -> list[SearchHit]:
    """The FAQ hits re-ordered by the head's ranking, in the places FAQ hits had, each carrying
    its probability and fit."""
    slots = [i for i, hit in enumerate(hits) if hit.chunk.kind == "faq"]
    ranking = ranked.order
    reordered_faqs = sorted(
        (
            replace(
                hits[i],
                probability=ranked.probability[hits[i].chunk.id],
                fit=ranked.fit[hits[i].chunk.id],
            )
            for i in slots
        ),
        key=lambda hit: ranking[hit.chunk.id],
        reverse=True,
    )
    reordered = list(hits)
    for slot, hit in zip(slots, reordered_faqs, strict=True):
        reordered[slot] = hit
    return reordered


def _confidence(hit: SearchHit) -> float:
    """The API's `confidence`: the FAQ head's probability for an entry it ranked, else the
    similarity."""
    value = hit.probability if hit.probability is not None else hit.dense
    return round(min(1.0, max(0.0, value)), 4)
