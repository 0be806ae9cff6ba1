"""A search of the knowledge index, in two requests: a `hybrid` query gathers candidates,
then a second scores exactly those, per view, for the blend every index computes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from opensearchpy.exceptions import NotFoundError, RequestError

from kefu.adapters.opensearch.client import unavailable
from kefu.adapters.opensearch.mapping import CHUNK_FIELDS, TEXT_FIELDS, rounded
from kefu.errors import IndexNotReady
from kefu.models import Chunk, SearchHit
from kefu.scoring import Blend, relative_lexical

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from kefu.ports import SearchQuery

SEARCH_REQUESTS = 2  # the candidates' `hybrid` search, then the exact scoring


class IndexSearch:
    """Searches the chunk index `index` through its search pipeline `search_pipeline`,
    scoring its `candidates` best fused chunks exactly (and asking each sub-query for as
    many)."""

    def __init__(
        self,
        client: OpenSearch,
        *,
        index: str,
        search_pipeline: str,
        candidates: int,
        blend: Blend,
    ) -> None:
        self._client = client
        self._index = index
        self._search_pipeline = search_pipeline
        self._candidates = candidates
        self._blend = blend

    def search(self, query: SearchQuery) -> list[SearchHit]:
        vector = rounded(query.vector)
        text_fields = _text_fields(query)
        with unavailable("search"):
            candidates = self._fused_candidates(query, vector, text_fields)
            if not candidates:
                return []
            scored = self._client.search(
                index=self._index,
                body=exact_scoring(candidates, query, vector, text_fields),
                include_named_queries_score=True,
            )["hits"]["hits"]
        hits = scored_hits(scored, self._blend)
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits[: query.limit]

    def _fused_candidates(
        self, query: SearchQuery, vector: list[float], text_fields: list[str]
    ) -> list[str]:
        """The document ids of the candidates' `hybrid` search, best fused first.

        The index or the pipeline missing means nothing was ingested yet: the search pipeline
        is the ingest side's to create, never a search's (the chat role may only search).
        """
        k = max(self._candidates, query.limit)
        try:
            response = self._client.search(
                index=self._index,
                body=candidate_search(query, vector, text_fields, k=k),
                search_pipeline=self._search_pipeline,
            )
        except NotFoundError as exc:
            if exc.error != "index_not_found_exception":
                raise
            raise IndexNotReady(
                "the knowledge index does not exist yet: ingest a knowledge base"
            ) from exc
        except RequestError as exc:
            if f"Pipeline {self._search_pipeline} is not defined" not in str(exc.info):
                raise
            raise IndexNotReady(
                f"the search pipeline {self._search_pipeline} does not exist yet: "
                "ingest a knowledge base"
            ) from exc
        # Every sub-query is filtered to the query's tenant: scoring these ids stays in it.
        return list(dict.fromkeys(hit["_id"] for hit in response["hits"]["hits"]))


def candidate_search(
    query: SearchQuery, vector: list[float], text_fields: list[str], *, k: int
) -> dict[str, Any]:
    """The `hybrid` search gathering `k` candidates: closest questions, centroids, contents,
    and the best BM25 matches, each filtered to the query's tenant, language and category,
    fused by the search pipeline. Which chunks get through is all this stage decides.

    `hybrid` must be the top-level query and takes at most five sub-queries. Its own `filter`
    needs OpenSearch 3.0, so each sub-query carries the filter (as an efficient k-NN filter);
    from 0, each sub-query takes `size` hits per shard without `pagination_depth`.
    """
    scope = _scope(query, prefix="")
    nested_scope = _scope(query, prefix="questions.")

    def knn(field: str, filters: list[dict[str, Any]]) -> dict[str, Any]:
        return {field: {"vector": vector, "k": k, "filter": {"bool": {"filter": filters}}}}

    sub_queries = [
        {
            "nested": {
                "path": "questions",
                "score_mode": "max",  # a chunk scores as its closest question
                "query": {"knn": knn("questions.vector", nested_scope)},
            }
        },
        {"knn": knn("centroid_vector", scope)},
        {"knn": knn("content_vector", scope)},
        {"bool": {"filter": scope, "must": [_bm25(query, text_fields)]}},
    ]
    return {"size": k, "_source": False, "query": {"hybrid": {"queries": sub_queries}}}


def exact_scoring(
    doc_ids: Sequence[str], query: SearchQuery, vector: list[float], text_fields: list[str]
) -> dict[str, Any]:
    """The search scoring the documents `doc_ids` exactly: one named query per view, and the
    BM25 query named `lexical`, each one's score returned (`include_named_queries_score`,
    OpenSearch 2.13).

    The fused scores of the candidates are relative to the other hits of their search, while
    answering or declining compares absolute cosines with thresholds calibrated on the embedded
    index; and scoring exactly keeps HNSW's approximation out of the scores.
    """

    def similarity(field: str, among: dict[str, Any]) -> dict[str, Any]:
        script = {
            "source": "knn_score",
            "lang": "knn",
            "params": {"field": field, "query_value": vector, "space_type": "innerproduct"},
        }
        return {"script_score": {"query": among, "script": script}}

    nearest = {
        "nested": {
            "path": "questions",
            "score_mode": "max",
            "query": similarity("questions.vector", {"match_all": {}}),
            "_name": "nearest",
        }
    }
    centroid = similarity("centroid_vector", {"exists": {"field": "centroid_vector"}})
    content = similarity("content_vector", {"match_all": {}})
    centroid["script_score"]["_name"] = "centroid"
    content["script_score"]["_name"] = "content"
    lexical = _bm25(query, text_fields)
    lexical["multi_match"]["_name"] = "lexical"
    return {
        "size": len(doc_ids),
        "_source": CHUNK_FIELDS,
        "track_total_hits": False,
        "query": {
            "bool": {
                "filter": [{"ids": {"values": list(doc_ids)}}],
                "should": [nearest, centroid, content, lexical],
            }
        },
    }


def scored_hits(scored: list[dict[str, Any]], blend: Blend) -> list[SearchHit]:
    """The hits of the exact scoring, scored by `blend` from their views' cosines and their
    BM25 scores relative to the best among them. A chunk without questions has no `nearest`
    (its content stands for it) and no `centroid`."""
    chunks: list[Chunk] = []
    nearest: list[float] = []
    centroid: list[float] = []
    content: list[float] = []
    bm25: list[float] = []
    for hit in scored:
        source = hit["_source"]
        chunks.append(Chunk(**{**source, "keys": tuple(source["keys"])}))
        scores = _named_scores(hit)
        bm25.append(scores.pop("lexical", 0.0))
        views = {name: _cosine(score) for name, score in scores.items()}
        content.append(views.get("content", 0.0))
        nearest.append(views.get("nearest", content[-1]))
        centroid.append(views.get("centroid", 0.0))
    is_faq = [chunk.kind == "faq" for chunk in chunks]
    dense = blend.dense(nearest=nearest, centroid=centroid, content=content, is_faq=is_faq)
    lexical = relative_lexical(bm25)
    fused = blend.fused(dense, lexical)
    closest = np.asarray(nearest, dtype=np.float32)
    return [
        SearchHit(
            chunk=chunk,
            score=float(fused[i]),
            dense=float(dense[i]),
            lexical=float(lexical[i]),
            nearest=float(closest[i]),
        )
        for i, chunk in enumerate(chunks)
    ]


def _text_fields(query: SearchQuery) -> list[str]:
    """The fields BM25 matches: the query language's analysis, or both when it is unknown."""
    if query.language == "zh":
        return [f"{name}.zh" for name in TEXT_FIELDS]
    if query.language == "en":
        return list(TEXT_FIELDS)
    return [*TEXT_FIELDS, *(f"{name}.zh" for name in TEXT_FIELDS)]


def _bm25(query: SearchQuery, text_fields: list[str]) -> dict[str, Any]:
    return {"multi_match": {"query": query.text, "fields": text_fields, "type": "best_fields"}}


def _named_scores(hit: dict[str, Any]) -> dict[str, float]:
    """Each named query's score for a hit (`include_named_queries_score`)."""
    return {name: float(score) for name, score in (hit.get("matched_queries") or {}).items()}


def _scope(query: SearchQuery, *, prefix: str) -> list[dict[str, Any]]:
    scope: list[dict[str, Any]] = [{"term": {f"{prefix}tenant": query.tenant}}]
    if query.language is not None:
        scope.append({"term": {f"{prefix}lang": query.language}})
    if query.category is not None:
        scope.append({"term": {f"{prefix}category": query.category}})
    return scope


def _cosine(score: float) -> float:
    """Undo the k-NN plugin's inner-product score: 1 + ip when ip ≥ 0, 1 / (1 - ip) below."""
    return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score
