"""The retriever: what it asks the index for, and that it decides with its own thresholds (the
decision itself is tested in test_decision.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from kefu.decision import BUILT_IN, Thresholds, decide
from kefu.head import FaqHead, Ranking
from kefu.models import SearchHit
from kefu.ports import SearchQuery
from kefu.retrieval import Retriever
from tests.search_hits import hit

DIM = 4
THRESHOLDS = Thresholds(fit=0.8, head=0.6, similarity=0.8, passage=0.7)


class _Unused:
    name = "unused"
    dim = 0


class _Embedder:
    name = "fixed"
    dim = DIM

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), DIM), dtype=np.float32) / 2


class _Index:
    """An index that finds the same hits for every question and records what it was asked."""

    version = "1"

    def __init__(self, hits: list[SearchHit], head: FaqHead | None = None) -> None:
        self.hits, self.stored = hits, head
        self.queries: list[SearchQuery] = []

    def search(self, query: SearchQuery) -> list[SearchHit]:
        self.queries.append(query)
        return self.hits[: query.limit]

    def load_head(self, tenant: str) -> bytes | None:
        return None if self.stored is None else self.stored.to_bytes()


def _head(*ids: str) -> FaqHead:
    classes = len(ids)
    return FaqHead(
        ids=ids,
        weights=np.zeros((DIM, classes), dtype=np.float32),
        bias=np.zeros(classes, dtype=np.float32),
        spread=np.zeros(classes, dtype=np.float32),
    )


def test_the_retriever_decides_on_what_it_finds_with_its_own_thresholds() -> None:
    hits = [hit("faq-1", "faq", 0.85), hit("doc#1", "passage", 0.75)]
    index = _Index(hits)

    def decision(thresholds: Thresholds) -> str:
        retriever = Retriever(embedder=_Embedder(), index=index, thresholds=thresholds)  # type: ignore[arg-type]
        decided = retriever.decide("q", language="en", tenant="acme")
        assert decided == decide(hits, retriever.thresholds)
        return decided.kind

    assert decision(THRESHOLDS) == "faq"
    assert decision(replace(THRESHOLDS, similarity=0.9)) == "passages"
    assert decision(replace(THRESHOLDS, similarity=0.9, passage=0.8)) == "decline"
    assert [(q.language, q.tenant, q.limit) for q in index.queries] == [("en", "acme", 5)] * 3


def test_with_a_head_the_index_is_asked_for_the_candidates_the_ranking_wants() -> None:
    hits = [hit(f"faq-{n}", "faq", 0.9 - n / 100) for n in range(10)]
    with_head = _Index(hits, _head(*(h.chunk.id for h in hits)))
    without = _Index(hits)

    def limits(index: _Index, ranking: Ranking, limit: int) -> int:
        retriever = Retriever(
            embedder=_Embedder(),  # type: ignore[arg-type]
            index=index,
            thresholds=THRESHOLDS,
            ranking=ranking,
        )
        found = retriever.search("q", language=None, tenant="default", limit=limit)
        assert len(found) == min(limit, len(hits))
        # re-ranked by the head where there is one
        assert all((h.probability is not None) == (index.stored is not None) for h in found)
        return index.queries[-1].limit

    assert limits(with_head, Ranking(), 3) == Ranking().candidates == 20
    assert limits(with_head, Ranking(candidates=7), 3) == 7
    assert limits(with_head, Ranking(candidates=7), 9) == 9
    assert limits(without, Ranking(candidates=7), 3) == 3  # nothing to re-rank


def test_build_retriever_resolves_the_thresholds_for_its_embedder() -> None:
    from kefu.adapters.embedders import HashingEmbedder
    from kefu.bootstrap import build_retriever
    from kefu.errors import ConfigurationError
    from kefu.settings import Settings

    class _Titan:
        name = "titan-embed-text-v2-1024"
        dim = 1024

    built = build_retriever(Settings(), embedder=HashingEmbedder(), index=_Unused())  # type: ignore[arg-type]
    assert built.thresholds == BUILT_IN["hashing-v1"]
    assert built.use_head
    given = Settings(passage_threshold=0.5)
    plain = build_retriever(given, embedder=HashingEmbedder(), index=_Unused(), use_head=False)  # type: ignore[arg-type]
    assert plain.thresholds == replace(BUILT_IN["hashing-v1"], passage=0.5)
    assert not plain.use_head
    with pytest.raises(ConfigurationError, match="KEFU_FAQ_THRESHOLD"):
        build_retriever(Settings(), embedder=_Titan(), index=_Unused())  # type: ignore[arg-type]


class _CountingEmbedder(_Embedder):
    def __init__(self) -> None:
        self.calls = 0

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return super().embed_queries(texts)


def test_a_topic_is_searched_first_and_the_whole_kb_after_with_one_embedding() -> None:
    embedder = _CountingEmbedder()
    declined = _Index([hit("faq-1", "faq", 0.5)])
    retriever = Retriever(embedder=embedder, index=declined, thresholds=THRESHOLDS)  # type: ignore[arg-type]

    decision = retriever.decide("and then?", language="en", tenant="acme", topic="returns")

    assert decision.kind == "decline"
    assert [q.category for q in declined.queries] == ["returns", None]
    assert embedder.calls == 1
    # A topic that answers is the decision: the whole KB is not searched
    answered = _Index([hit("faq-1", "faq", 0.85)])
    retriever.index = answered
    assert (
        retriever.decide("and then?", language="en", tenant="acme", topic="returns").kind == "faq"
    )
    assert [q.category for q in answered.queries] == ["returns"]
