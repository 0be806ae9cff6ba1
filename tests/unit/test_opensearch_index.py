"""The OpenSearch index at its edge: the requests it sends and how it reads the answers.

No server: a recording client stands in for `opensearchpy.OpenSearch`. The behaviour against
a real cluster is the contract suite's (tests/contract, with OPENSEARCH_URL).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import requests
from botocore.credentials import Credentials
from opensearchpy import AWSV4SignerAuth, RequestsHttpConnection
from opensearchpy.exceptions import ConnectionError, NotFoundError, RequestError

from kefu.adapters.opensearch_index import OpenSearchIndex, connect, document_id
from kefu.errors import (
    ConfigurationError,
    DependencyUnavailable,
    IndexNotReady,
    IndexWriteRejected,
)
from kefu.models import Chunk, fingerprint
from kefu.ports import SearchQuery
from tests.opensearch_fake import RecordingClient

REFUND = Chunk(
    id="refund",
    kind="faq",
    lang="zh",
    title="退款多久到账？",
    text="1–3 个工作日。",
    keys=("退款多久到账？", "钱什么时候退回来"),
    category="payments",
    source="faq.jsonl",
)
# Content, then one row per question; unit length, so the stored rows are exact to 6 decimals.
REFUND_VECTORS = np.array([[1, 0, 0], [0, 1, 0], [0, 0.6, 0.8]], dtype=np.float32)
REFUND_DOC = document_id("default", "refund")


def _index(client: RecordingClient, **kwargs: Any) -> OpenSearchIndex:
    return OpenSearchIndex(client, "kefu-kb", dim=3, **kwargs)  # type: ignore[arg-type]


def _chunks(count: int, *, text: str = "x" * 200) -> list[Chunk]:
    return [
        Chunk(id=f"c{n:04d}", kind="faq", lang="en", title=f"q{n}", text=text, keys=(f"q{n}",))
        for n in range(count)
    ]


def _unit_rows(count: int, rows: int, dim: int = 3) -> list[np.ndarray]:
    matrix = np.random.default_rng(5).standard_normal((count, rows, dim)).astype(np.float32)
    return list(matrix / np.linalg.norm(matrix, axis=2, keepdims=True))


def _bulk_lines(client: RecordingClient) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for call in client.of("bulk")
        for line in call.kwargs["body"].rstrip("\n").split("\n")
    ]


# -- the index ------------------------------------------------------------------------------
def test_the_index_is_created_with_knn_vectors_bilingual_text_and_keywords() -> None:
    client = RecordingClient()
    _index(client).ensure_index()

    vector = {
        "type": "knn_vector",
        "dimension": 3,
        "method": {
            "name": "hnsw",
            "engine": "faiss",
            "space_type": "innerproduct",
            "parameters": {"m": 16, "ef_construction": 128},
        },
    }
    text = {
        "type": "text",
        "analyzer": "english",
        "fields": {"zh": {"type": "text", "analyzer": "smartcn"}},
    }
    keyword = {"type": "keyword"}
    assert client.indices_created["kefu-kb"] == {
        "settings": {"index": {"knn": True, "number_of_shards": 1}},
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "id": keyword,
                "kind": keyword,
                "lang": keyword,
                "tenant": keyword,
                "category": keyword,
                "source": keyword,
                "fingerprint": keyword,
                "title": text,
                "section": text,
                "text": text,
                "keys": text,
                "content_vector": vector,
                "centroid_vector": vector,
                "questions": {
                    "type": "nested",
                    "properties": {
                        "vector": vector,
                        "tenant": keyword,
                        "lang": keyword,
                        "category": keyword,
                    },
                },
            },
        },
    }
    assert client.indices_created["kefu-kb-meta"] == {
        "mappings": {"properties": {"version": {"type": "long"}}}
    }


def test_an_existing_index_is_left_alone_and_a_lost_race_to_create_it_is_harmless() -> None:
    client = RecordingClient()
    index = _index(client)
    index.ensure_index()
    index.ensure_index()
    assert len(client.of("indices.create")) == 2  # the index and its meta index, once each

    racing = RecordingClient()

    def lose_race(*, index: str, body: dict[str, Any]) -> None:
        raise RequestError(400, "resource_already_exists_exception", {})

    racing.indices.create = lose_race  # type: ignore[method-assign]
    _index(racing).ensure_index()


def test_an_analyzer_the_cluster_lacks_is_a_configuration_error() -> None:
    client = RecordingClient()

    def refuse(*, index: str, body: dict[str, Any]) -> None:
        raise RequestError(400, "mapper_parsing_exception", {"reason": "analyzer [smartcn]"})

    client.indices.create = refuse  # type: ignore[method-assign]
    with pytest.raises(ConfigurationError, match="cannot create index kefu-kb"):
        _index(client).ensure_index()


# -- document ids ---------------------------------------------------------------------------
def test_a_document_id_is_the_sha256_of_tenant_and_chunk_id_and_never_changes() -> None:
    # Pinned: a changed scheme would orphan every document already written under the old ids.
    assert REFUND_DOC == "40bed04680458255cfb4c773514785039a7d66e7fcf9acbfbee72273ea9a6666"
    assert document_id("acme", "refund") != REFUND_DOC
    # No spelling of a tenant or an id collides with another pair, and every id is 64 hex digits.
    assert document_id("a\u001fb", "c") != document_id("a", "b\u001fc")
    assert document_id('a", "b', "c") != document_id("a", 'b", "c')
    long_id = document_id("default", "policy.zh.md#" + "退" * 600)
    assert len(long_id) == 64
    assert set(long_id) <= set("0123456789abcdef")


# -- writes ---------------------------------------------------------------------------------
def test_an_upsert_writes_the_chunk_its_vectors_and_bumps_the_version() -> None:
    client = RecordingClient()
    index = _index(client)

    index.upsert([REFUND], [REFUND_VECTORS])

    [bulk] = client.of("bulk")
    assert bulk.kwargs["refresh"] == "wait_for"
    scope = {"tenant": "default", "lang": "zh", "category": "payments"}
    assert _bulk_lines(client) == [
        {"index": {"_index": "kefu-kb", "_id": REFUND_DOC}},
        {
            "id": "refund",
            "kind": "faq",
            "lang": "zh",
            "title": "退款多久到账？",
            "text": "1–3 个工作日。",
            "keys": ["退款多久到账？", "钱什么时候退回来"],
            "category": "payments",
            "source": "faq.jsonl",
            "section": "",
            "tenant": "default",
            "fingerprint": fingerprint(REFUND),
            "content_vector": [1.0, 0.0, 0.0],
            "questions": [
                {"vector": [0.0, 1.0, 0.0], **scope},
                {"vector": [0.0, 0.6, 0.8], **scope},
            ],
            # (q1 + q2) / |q1 + q2| = (0, 1.6, 0.8) / 1.788854
            "centroid_vector": [0.0, 0.894427, 0.447214],
        },
    ]
    # Chinese travels as UTF-8, not as \u escapes that would triple its size.
    assert "退款" in bulk.kwargs["body"]
    [update] = client.of("update")
    assert update.kwargs == {
        "index": "kefu-kb-meta",
        "id": "version",
        "body": {
            "script": {"source": "ctx._source.version += 1", "lang": "painless"},
            "upsert": {"version": 1},
        },
        "retry_on_conflict": 5,
        "refresh": "wait_for",
    }
    assert index.version == "1"


def test_an_unchanged_chunk_is_neither_rewritten_nor_a_new_version() -> None:
    client = RecordingClient()
    index = _index(client)
    index.upsert([REFUND], [REFUND_VECTORS])
    index.upsert([REFUND], [REFUND_VECTORS])

    assert len(client.of("bulk")) == 1
    assert client.of("mget")[-1].kwargs == {
        "index": "kefu-kb",
        "body": {"ids": [REFUND_DOC]},
        "_source_includes": ["fingerprint"],
    }
    assert index.version == "1"


def test_a_vector_count_that_does_not_match_the_keys_is_refused_before_any_request() -> None:
    client = RecordingClient()
    with pytest.raises(ValueError, match="one vector"):
        _index(client).upsert([REFUND], [REFUND_VECTORS[:2]])
    assert client.calls == []


def test_bulk_requests_stay_within_the_byte_bound_and_the_document_count() -> None:
    client = RecordingClient()
    bound = 12_000
    chunks = _chunks(120)
    _index(client, max_bulk_bytes=bound, max_bulk_docs=25).upsert(chunks, _unit_rows(120, 2))

    sizes = [len(call.kwargs["body"].encode()) for call in client.of("bulk")]
    assert len(sizes) > 120 / 25  # the byte bound, not the count, split these
    assert max(sizes) <= bound
    written = [line["index"]["_id"] for line in _bulk_lines(client) if "index" in line]
    assert written == [document_id(chunk.tenant, chunk.id) for chunk in chunks]
    # Posted to the index's own `_bulk`, which the access policy scopes to this index
    assert {call.kwargs.get("index") for call in client.of("bulk")} == {"kefu-kb"}


def test_a_chunk_larger_than_a_bulk_request_is_refused_with_its_id() -> None:
    client = RecordingClient()
    with pytest.raises(IndexWriteRejected, match=r"chunk c0000 is .* bytes"):
        _index(client, max_bulk_bytes=1_000).upsert(_chunks(1, text="y" * 2_000), _unit_rows(1, 2))
    assert client.of("bulk") == []


def test_a_refused_document_is_reported_by_id_and_the_version_stays() -> None:
    client = RecordingClient()
    client.refuse[document_id("default", "c0001")] = (
        400,
        {"type": "mapper_parsing_exception", "reason": "bad"},
    )
    index = _index(client)
    with pytest.raises(
        IndexWriteRejected, match=r"1 of the chunks .*c0001 \(tenant default\): 400"
    ):
        index.upsert(_chunks(3), _unit_rows(3, 2))
    assert index.version == "0"


def test_a_shard_failure_on_write_is_the_cluster_being_unavailable() -> None:
    client = RecordingClient()
    client.refuse[document_id("default", "c0000")] = (503, {"type": "unavailable_shards_exception"})
    with pytest.raises(DependencyUnavailable, match=r"c0000 \(tenant default\): 503"):
        _index(client).upsert(_chunks(1), _unit_rows(1, 2))


def test_delete_sends_deletes_by_the_tenants_document_ids_and_a_missing_id_is_no_error() -> None:
    client = RecordingClient()
    index = _index(client)
    index.upsert([REFUND], [REFUND_VECTORS])

    index.delete(["refund", "never-written"], tenant="default")

    assert _bulk_lines(client)[-2:] == [
        {"delete": {"_index": "kefu-kb", "_id": REFUND_DOC}},
        {"delete": {"_index": "kefu-kb", "_id": document_id("default", "never-written")}},
    ]
    assert index.version == "2"
    index.delete(["never-written"], tenant="default")
    assert index.version == "2"


def test_one_chunk_id_in_two_tenants_is_two_documents_and_a_delete_stays_in_its_tenant() -> None:
    # Given the same FAQ entry ingested for the default tenant and for acme
    client = RecordingClient()
    index = _index(client)
    acme_refund = replace(REFUND, tenant="acme", text="Ask Acme.")
    index.upsert([REFUND], [REFUND_VECTORS])
    index.upsert([acme_refund], [REFUND_VECTORS])

    # Then acme's upsert looked for acme's document, found none, and wrote it beside the other
    assert client.of("mget")[-1].kwargs["body"] == {"ids": [document_id("acme", "refund")]}
    assert set(client.docs) == {REFUND_DOC, document_id("acme", "refund")}
    assert client.docs[REFUND_DOC]["text"] == REFUND.text
    assert client.docs[document_id("acme", "refund")]["text"] == "Ask Acme."

    # When acme deletes the entry, the default tenant's stays
    index.delete(["refund"], tenant="acme")
    assert set(client.docs) == {REFUND_DOC}
    assert index.version == "3"


def test_a_connection_failure_on_write_is_dependency_unavailable() -> None:
    client = RecordingClient()

    def down(**_: Any) -> None:
        raise ConnectionError("N/A", "connection refused", OSError())

    client.mget = down  # type: ignore[method-assign]
    with pytest.raises(DependencyUnavailable, match="OpenSearch read failed"):
        _index(client).upsert([REFUND], [REFUND_VECTORS])


# -- reads ----------------------------------------------------------------------------------
def test_a_missing_index_has_no_chunks_no_fingerprints_and_version_zero() -> None:
    client = RecordingClient()
    client.search_responses.append(NotFoundError(404, "index_not_found_exception", {}))
    index = _index(client)
    assert index.version == "0"
    assert index.fingerprints("default") == {}


def _fingerprint_hit(tenant: str, chunk_id: str, digest: str) -> dict[str, Any]:
    return {
        "_id": document_id(tenant, chunk_id),
        "_source": {"id": chunk_id, "fingerprint": digest},
        "sort": [chunk_id],
    }


def test_fingerprints_are_paged_with_search_after_per_tenant_and_source() -> None:
    client = RecordingClient()
    first = [_fingerprint_hit("acme", f"c{n:04d}", f"f{n}") for n in range(1_000)]
    last = [_fingerprint_hit("acme", "c1000", "f1000")]
    client.search_responses.extend([{"hits": {"hits": first}}, {"hits": {"hits": last}}])

    found = _index(client).fingerprints("acme", source="faq.jsonl")

    # Keyed by the chunk ids, not by the documents' ids
    assert len(found) == 1_001
    assert found["c1000"] == "f1000"
    first_call, second_call = (call.kwargs["body"] for call in client.of("search"))
    assert first_call == {
        "size": 1000,
        "_source": ["id", "fingerprint"],
        "query": {
            "bool": {"filter": [{"term": {"tenant": "acme"}}, {"term": {"source": "faq.jsonl"}}]}
        },
        "sort": [{"id": "asc"}],
    }
    assert second_call["search_after"] == ["c0999"]


QUERY_VECTOR = np.array([0.6, 0.8, 0.0], dtype=np.float32)


def _leg(*hits: tuple[str, float]) -> dict[str, Any]:
    """One `_msearch` response: the documents of the default tenant's `(chunk id, score)`."""
    return {
        "took": 2,
        "timed_out": False,
        "status": 200,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {
            "max_score": max((score for _, score in hits), default=None),
            "hits": [
                {"_index": "kefu-kb", "_id": document_id("default", chunk_id), "_score": score}
                for chunk_id, score in hits
            ],
        },
    }


def _scored(chunk: Chunk, **views: float) -> dict[str, Any]:
    return {
        "_index": "kefu-kb",
        "_id": document_id(chunk.tenant, chunk.id),
        "_score": sum(views.values()),
        "_source": {
            "id": chunk.id,
            "kind": chunk.kind,
            "lang": chunk.lang,
            "title": chunk.title,
            "text": chunk.text,
            "keys": list(chunk.keys),
            "category": chunk.category,
            "source": chunk.source,
            "section": chunk.section,
            "tenant": chunk.tenant,
        },
        "matched_queries": views,
    }


PASSAGE = Chunk(
    id="policy#2",
    kind="passage",
    lang="zh",
    title="退款政策",
    text="退款在审核通过后 1–3 个工作日内原路退回。",
    keys=(),
    section="时效",
    source="policy.zh.md",
)
OUTSIDE = Chunk(
    id="oos-weather", kind="out_of_scope", lang="zh", title="", text="", keys=("明天天气怎么样",)
)


def _canned_search(client: RecordingClient) -> None:
    """What a cluster answers for 退款多久: four candidate legs, then the exact scores."""
    client.msearch_responses.append(
        {
            "took": 5,
            "responses": [
                _leg(("refund", 1.93), ("oos-weather", 0.8)),  # closest questions
                _leg(("refund", 1.81)),  # closest centroids
                _leg(("policy#2", 1.7), ("refund", 1.6), ("oos-weather", 0.9)),  # contents
                _leg(("policy#2", 6.2), ("refund", 3.1)),  # BM25
            ],
        }
    )
    client.search_responses.append(
        {
            "took": 3,
            "timed_out": False,
            "hits": {
                "hits": [
                    _scored(REFUND, nearest=1.9, centroid=1.8, content=1.6),
                    _scored(PASSAGE, content=1.7),
                    _scored(OUTSIDE, nearest=0.8, content=0.9),
                ]
            },
        }
    )


def test_a_search_asks_for_candidates_per_leg_filtered_then_scores_them_exactly() -> None:
    client = RecordingClient()
    _canned_search(client)
    query = SearchQuery(
        text="退款多久", vector=QUERY_VECTOR, language="zh", tenant="acme", category="payments"
    )

    _index(client, candidates=20).search(query)

    vector = [0.6, 0.8, 0.0]
    scope = [
        {"term": {"tenant": "acme"}},
        {"term": {"lang": "zh"}},
        {"term": {"category": "payments"}},
    ]
    nested_scope = [
        {"term": {"questions.tenant": "acme"}},
        {"term": {"questions.lang": "zh"}},
        {"term": {"questions.category": "payments"}},
    ]

    def knn(field: str, filters: list[dict[str, Any]]) -> dict[str, Any]:
        return {field: {"vector": vector, "k": 20, "filter": {"bool": {"filter": filters}}}}

    def leg(query: dict[str, Any]) -> dict[str, Any]:
        return {"size": 20, "_source": False, "track_total_hits": False, "query": query}

    [msearch] = client.of("msearch")
    assert msearch.kwargs == {
        "index": "kefu-kb",
        "body": [
            {},
            leg(
                {
                    "nested": {
                        "path": "questions",
                        "score_mode": "max",
                        "query": {"knn": knn("questions.vector", nested_scope)},
                    }
                }
            ),
            {},
            leg({"knn": knn("centroid_vector", scope)}),
            {},
            leg({"knn": knn("content_vector", scope)}),
            {},
            leg(
                {
                    "bool": {
                        "filter": scope,
                        "must": [
                            {
                                "multi_match": {
                                    "query": "退款多久",
                                    "fields": ["title.zh", "section.zh", "text.zh", "keys.zh"],
                                    "type": "best_fields",
                                }
                            }
                        ],
                    }
                }
            ),
        ],
    }

    def script(field: str) -> dict[str, Any]:
        return {
            "source": "knn_score",
            "lang": "knn",
            "params": {"field": field, "query_value": vector, "space_type": "innerproduct"},
        }

    [exact] = client.of("search")
    assert exact.kwargs == {
        "index": "kefu-kb",
        "include_named_queries_score": True,
        "body": {
            "size": 3,
            "_source": [
                "id",
                "kind",
                "lang",
                "title",
                "text",
                "keys",
                "category",
                "source",
                "section",
                "tenant",
            ],
            "track_total_hits": False,
            "query": {
                "bool": {
                    "filter": [
                        {
                            "ids": {
                                "values": [
                                    REFUND_DOC,
                                    document_id("default", "oos-weather"),
                                    document_id("default", "policy#2"),
                                ]
                            }
                        }
                    ],
                    "should": [
                        {
                            "nested": {
                                "path": "questions",
                                "score_mode": "max",
                                "query": {
                                    "script_score": {
                                        "query": {"match_all": {}},
                                        "script": script("questions.vector"),
                                    }
                                },
                                "_name": "nearest",
                            }
                        },
                        {
                            "script_score": {
                                "query": {"exists": {"field": "centroid_vector"}},
                                "script": script("centroid_vector"),
                                "_name": "centroid",
                            }
                        },
                        {
                            "script_score": {
                                "query": {"match_all": {}},
                                "script": script("content_vector"),
                                "_name": "content",
                            }
                        },
                    ],
                }
            },
        },
    }


def test_a_search_without_language_matches_both_analyzers_and_only_the_tenant() -> None:
    client = RecordingClient()
    _canned_search(client)
    _index(client).search(SearchQuery(text="refund", vector=QUERY_VECTOR))

    body = client.of("msearch")[0].kwargs["body"]
    lexical = body[7]["query"]["bool"]
    assert lexical["filter"] == [{"term": {"tenant": "default"}}]
    assert lexical["must"][0]["multi_match"]["fields"] == [
        "title",
        "section",
        "text",
        "keys",
        "title.zh",
        "section.zh",
        "text.zh",
        "keys.zh",
    ]


def test_the_exact_scores_become_the_same_blend_as_the_embedded_index() -> None:
    client = RecordingClient()
    _canned_search(client)

    hits = _index(client).search(SearchQuery(text="退款多久", vector=QUERY_VECTOR, limit=3))

    assert [hit.chunk for hit in hits] == [REFUND, PASSAGE, OUTSIDE]
    refund, passage, outside = hits
    # FAQ: cosines 0.9 (closest question), 0.8 (centroid), 0.6 (answer): (0.9+0.8+0.5*0.6)/2.5
    assert refund.nearest == pytest.approx(0.9)
    assert refund.dense == pytest.approx(0.8)
    assert refund.lexical == pytest.approx(0.5)  # 3.1 of the best BM25 6.2
    assert refund.score == pytest.approx(0.8)  # lexical_weight 0, as the embedded default
    # A passage is its text: dense = nearest = its content's cosine.
    assert passage.dense == passage.nearest == pytest.approx(0.7)
    assert passage.lexical == 1.0
    # An inner-product score below 1 is a negative cosine: 1 / (1 - ip) = 0.8 -> ip = -0.25.
    assert outside.dense == outside.nearest == pytest.approx(-0.25)
    assert outside.lexical == 0.0


def test_the_lexical_weight_reorders_and_the_limit_cuts() -> None:
    client = RecordingClient()
    _canned_search(client)

    hits = _index(client, lexical_weight=0.5).search(
        SearchQuery(text="退款多久", vector=QUERY_VECTOR, limit=2)
    )

    # The passage's full BM25 credit (0.7 + 0.5 * 1.0) now outranks the FAQ (0.8 + 0.5 * 0.5).
    assert [(hit.chunk.id, round(hit.score, 6)) for hit in hits] == [
        ("policy#2", 1.2),
        ("refund", 1.05),
    ]


def test_no_candidates_means_no_hits_and_no_second_request() -> None:
    client = RecordingClient()
    client.msearch_responses.append({"responses": [_leg(), _leg(), _leg(), _leg()]})
    assert _index(client).search(SearchQuery(text="zzz", vector=QUERY_VECTOR)) == []
    assert client.of("search") == []


def test_a_search_of_a_missing_index_says_the_index_is_not_ready() -> None:
    client = RecordingClient()
    missing = {"error": {"type": "index_not_found_exception", "index": "kefu-kb"}, "status": 404}
    client.msearch_responses.append({"responses": [missing] * 4})
    with pytest.raises(IndexNotReady):
        _index(client).search(SearchQuery(text="x", vector=QUERY_VECTOR))


def test_a_failed_leg_or_a_lost_connection_makes_search_unavailable() -> None:
    client = RecordingClient()
    rejected = {"error": {"type": "es_rejected_execution_exception"}, "status": 429}
    client.msearch_responses.append({"responses": [_leg(), rejected, _leg(), _leg()]})
    client.msearch_responses.append(ConnectionError("N/A", "timed out", OSError()))
    index = _index(client)
    for _ in range(2):
        with pytest.raises(DependencyUnavailable):
            index.search(SearchQuery(text="x", vector=QUERY_VECTOR))


# -- connecting -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("service", "url"),
    [
        ("es", "https://search-kefu-abc.us-east-1.es.amazonaws.com"),
        ("aoss", "https://abc123.us-east-1.aoss.amazonaws.com"),
    ],
)
def test_connect_signs_with_sigv4_for_the_service_and_verifies_tls(service: str, url: str) -> None:
    credentials = Credentials("AKIDEXAMPLE", "secret", "token")

    client = connect(url, region="us-east-1", service=service, credentials=credentials)  # type: ignore[arg-type]

    connection = client.transport.get_connection()
    assert isinstance(connection, RequestsHttpConnection)
    auth = connection.session.auth
    assert isinstance(auth, AWSV4SignerAuth)
    assert auth.service == service
    assert connection.session.verify  # a CA bundle, never False
    # Signing is local: the scope names the region and the service.
    signed = auth(requests.Request("GET", f"{url}/kefu-kb/_count").prepare())
    assert f"/us-east-1/{service}/aws4_request" in signed.headers["Authorization"]


def test_connect_fails_fast_by_default_and_takes_the_batch_budget_when_asked() -> None:
    url = "https://search-kefu-abc.us-east-1.es.amazonaws.com"
    credentials = Credentials("AKIDEXAMPLE", "secret", "token")

    chat = connect(url, region="us-east-1", credentials=credentials)
    batch = connect(url, region="us-east-1", credentials=credentials, timeout=10.0, max_retries=2)

    assert chat.transport.get_connection().timeout == 1.5
    assert (chat.transport.max_retries, chat.transport.retry_on_timeout) == (1, True)
    assert batch.transport.get_connection().timeout == 10.0
    assert batch.transport.max_retries == 2


def test_connect_refuses_to_sign_over_plain_http() -> None:
    with pytest.raises(ConfigurationError, match="https"):
        connect("http://localhost:9200", region="us-east-1", credentials=Credentials("a", "b"))
