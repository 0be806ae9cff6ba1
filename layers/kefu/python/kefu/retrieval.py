"""Retrieval: a question embedded, searched, its FAQ candidates re-ranked by the tenant's FAQ
head, and the decision taken (`kefu.decision`). The chat turn and the evaluation share it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from kefu.decision import Decision, Thresholds, decide
from kefu.errors import DependencyUnavailable
from kefu.head import UNREADABLE, FaqHead, Ranked, Ranking
from kefu.models import SearchHit
from kefu.observability import logger
from kefu.ports import Embedder, KnowledgeReader, SearchQuery
from kefu.text import Language

if TYPE_CHECKING:
    from kefu.ports import Vectors

# How often a retriever asks whether the KB version moved on (and the head with it).
HEAD_REFRESH_SECONDS = 30.0
# How much of the question a follow-up follows is read with it: the end, about a KB question's
# length (the longest in the sample KB and the datasets is 91 tokens; 200 Chinese characters are
# about 130 of the 256 a local query is cut to).
FOLLOWED_CHARS = 200


class Retriever:
    """Finds what the knowledge base says about a question, and whether that is enough."""

    def __init__(
        self,
        *,
        embedder: Embedder,
        index: KnowledgeReader,
        thresholds: Thresholds,
        ranking: Ranking = Ranking(),  # noqa: B008 (frozen)
        limit: int = 5,
        use_head: bool = True,
        head_refresh_seconds: float = HEAD_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.embedder = embedder
        self.index = index
        self.thresholds = thresholds
        self.ranking = ranking
        self.limit = limit
        self.use_head = use_head
        self.head_refresh_seconds = head_refresh_seconds
        self._clock = clock
        # tenant -> (when the version was last read, that version, the head read at it)
        self._heads: dict[str, tuple[float, str, FaqHead | None]] = {}

    def head(self, tenant: str) -> FaqHead | None:
        """The tenant's FAQ head: read again when the KB version has moved on, which is asked
        at most every `head_refresh_seconds`. The head is optional: when it cannot be read
        (the index unavailable, a damaged, earlier or newer-format document), questions are
        ranked by similarity, and the chat turn goes on."""
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
        except UNREADABLE as exc:
            # Expected for a head an earlier release stored, until the upgrade retrains it.
            logger.warning(
                "FAQ head unreadable; ranking by similarity",
                extra={"tenant": tenant, "reason": str(exc)},
            )
            head = None
        if head is not None and head.dim != self.embedder.dim:
            head = None  # trained with another embedder: retraining at the next ingest fixes it
        self._heads[tenant] = (now, version, head)
        return head

    def kb_version(self, tenant: str) -> str | None:
        """The KB's version as last read (asked at most every `head_refresh_seconds`, with the
        head); None when it could not be read."""
        self.head(tenant)
        cached = self._heads.get(tenant)
        return cached[1] if cached is not None else None

    def embed(self, question: str) -> Vectors:
        """The question's vector. Raises DependencyUnavailable."""
        return self.embedder.embed_queries([question])[0]

    def search(
        self,
        question: str,
        *,
        language: Language | None,
        tenant: str,
        limit: int | None = None,
        category: str | None = None,
        vector: Vectors | None = None,
    ) -> list[SearchHit]:
        """The best chunks for a question (`vector` its embedding, if already made); with the
        tenant's head, its FAQ entries re-ranked and given the head's probability and their fit
        (where the head knows them all)."""
        if vector is None:
            vector = self.embed(question)
        return self._search(question, vector, language, tenant, limit, category)

    def _search(
        self,
        question: str,
        vector: Vectors,
        language: Language | None,
        tenant: str,
        limit: int | None,
        category: str | None,
    ) -> list[SearchHit]:
        limit = limit or self.limit
        head = self.head(tenant) if self.use_head else None
        query = SearchQuery(
            text=question,
            vector=vector,
            language=language,
            tenant=tenant,
            limit=max(limit, self.ranking.candidates) if head else limit,
            category=category,
        )
        hits = self.index.search(query)
        if head is not None:
            faqs = [hit for hit in hits if hit.chunk.kind == "faq"]
            ranked = head.rank(
                vector,
                [hit.chunk.id for hit in faqs],
                [hit.dense for hit in faqs],
                [hit.lexical for hit in faqs],
                self.ranking,
            )
            if ranked is not None:
                hits = _rerank(hits, ranked)
        return hits[:limit]

    def decide(
        self,
        question: str,
        *,
        language: Language | None,
        tenant: str,
        topic: str | None = None,
        previous: str | None = None,
        vector: Vectors | None = None,
    ) -> Decision:
        """The decision on the question; with a `topic` (a KB category, the conversation's),
        within that topic first: the question alone, then read after the `previous` question
        it follows up ("如果当初是信用卡付的呢？" after "几天能拿到退款"); and across the whole
        KB when the topic does not answer it. `vector` is the question's, if already embedded."""
        if vector is None:
            vector = self.embed(question)
        if topic is not None:
            within = decide(
                self._search(question, vector, language, tenant, None, topic), self.thresholds
            )
            if within.kind != "decline":
                return within
            if previous:
                # The end of the question it follows: the query is cut to what the embedder
                # reads (256 tokens locally), and the follow-up itself must stay in it.
                joined = f"{previous[-FOLLOWED_CHARS:]}\n{question}"
                joined_vector = self.embedder.embed_queries([joined])[0]
                hits = self._search(joined, joined_vector, language, tenant, None, topic)
                within = decide(hits, self.thresholds)
                if within.kind != "decline":
                    return within
        hits = self._search(question, vector, language, tenant, None, None)
        return decide(hits, self.thresholds)


def _rerank(hits: list[SearchHit], ranked: Ranked) -> list[SearchHit]:
    """The FAQ hits re-ordered by the head's ranking, in the places FAQ hits had, each carrying
    its probability and fit."""
    slots = [i for i, hit in enumerate(hits) if hit.chunk.kind == "faq"]
    reordered_faqs = sorted(
        (
            replace(
                hits[i],
                probability=ranked.probability[hits[i].chunk.id],
                fit=ranked.fit[hits[i].chunk.id],
            )
            for i in slots
        ),
        key=lambda hit: ranked.order[hit.chunk.id],
        reverse=True,
    )
    reordered = list(hits)
    for slot, hit in zip(slots, reordered_faqs, strict=True):
        reordered[slot] = hit
    return reordered
