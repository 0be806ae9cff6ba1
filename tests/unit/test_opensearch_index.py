"""The OpenSearch index at its edge: the requests it sends and how it reads the answers.

No server: a recording client stands in for `opensearchpy.OpenSearch`. The behaviour against
a real cluster is the contract suite's (tests/contract, with OPENSEARCH_URL).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import requests
from botocore.credentials import Credentials
from opensearchpy import AWSV4SignerAuth, RequestsHttpConnection
from opensearchpy.exceptions import (
    ConnectionError,
    NotFoundError,
    RequestError,
    TransportError,
)

from kefu.adapters.embedded_index import EmbeddedIndex
from kefu.adapters.opensearch import OpenSearchIndex, connect, document_id
from kefu.errors import (
    ConfigurationError,
    DependencyUnavailable,
    IndexNotReady,
    IndexWriteRejected,
)
from kefu.models import Chunk, fingerprint
from kefu.ports import SearchQuery
from kefu.scoring import Blend
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
                "kb_version": keyword,
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
        "mappings": {
            "properties": {
                "version": {"type": "long"},
                "reserved": {"type": "long"},
                "tenant": {"type": "keyword"},
                "head": {"type": "binary"},
            }
        }
    }


HYBRID_PIPELINE = {
    "description": "Fuses the candidate sub-queries of knowledge index kefu-kb",
    "phase_results_processors": [
        {
            "normalization-processor": {
                "normalization": {"technique": "min_max"},
                "combination": {
                    "technique": "arithmetic_mean",
                    "parameters": {"weights": [0.25, 0.25, 0.25, 0.25]},
                },
            }
        }
    ],
}


def test_ensuring_the_index_creates_the_search_pipeline_that_fuses_the_candidates() -> None:
    client = RecordingClient()
    index = _index(client)

    index.ensure_index()

    assert index.search_pipeline == "kefu-kb-hybrid"
    [put] = client.of("search_pipeline.put")
    assert put.kwargs == {"id": "kefu-kb-hybrid", "body": HYBRID_PIPELINE}


def test_a_pipeline_already_in_place_is_not_rewritten_and_a_different_one_is_replaced() -> None:
    client = RecordingClient()
    _index(client).ensure_index()
    _index(client).ensure_index()
    assert len(client.of("search_pipeline.get")) == 2
    assert len(client.of("search_pipeline.put")) == 1  # a PUT republishes the cluster state

    # Given a pipeline of other weights, as an older release wrote it
    client.pipelines["kefu-kb-hybrid"]["phase_results_processors"][0]["normalization-processor"][
        "combination"
    ]["parameters"]["weights"] = [0.4, 0.2, 0.2, 0.2]
    _index(client).ensure_index()
    assert client.pipelines["kefu-kb-hybrid"] == HYBRID_PIPELINE


def test_a_cluster_that_refuses_the_pipeline_is_a_configuration_error() -> None:
    client = RecordingClient()

    def refuse(*, id: str, body: dict[str, Any]) -> None:
        raise RequestError(400, "parse_exception", {"reason": "normalization-processor"})

    client.search_pipeline.put = refuse  # type: ignore[method-assign]
    with pytest.raises(ConfigurationError, match="cannot create search pipeline kefu-kb-hybrid"):
        _index(client).ensure_index()


def test_an_existing_index_is_left_alone_and_a_lost_race_to_create_it_is_harmless() -> None:
    client = RecordingClient()
    index = _index(client)
    index.ensure_index()
    index.ensure_index()
    assert len(client.of("indices.create")) == 2  # the index and its meta index, once each

    # Given another writer that creates each index between our exists check and our create
    racing = RecordingClient()
    attempts: list[str] = []

    def lose_race(*, index: str, body: dict[str, Any]) -> None:
        attempts.append(index)
        raise RequestError(400, "resource_already_exists_exception", {})

    racing.indices.create = lose_race  # type: ignore[method-assign]
    raced = _index(racing)
    raced.ensure_index()
    # Then the other writer's indices are used: the meta index and the pipeline are still set up
    assert attempts == ["kefu-kb", "kefu-kb-meta"]
    assert list(racing.pipelines) == ["kefu-kb-hybrid"]
    # And the index is ready: a write goes straight to bulk without setting it up again
    raced.upsert(_chunks(1), _unit_rows(1, 2))
    assert len(racing.of("indices.exists")) == 2
    written = [line["index"]["_id"] for line in _bulk_lines(racing) if "index" in line]
    assert written == [document_id("default", "c0000")]


def test_an_index_created_before_chunks_carried_their_kb_version_gets_the_field() -> None:
    # Given an index of the previous mapping, without kb_version
    client = RecordingClient()
    _index(client).ensure_index()
    del client.indices_created["kefu-kb"]["mappings"]["properties"]["kb_version"]

    _index(client).ensure_index()

    put_mapping, _meta = client.of("indices.put_mapping")
    assert put_mapping.kwargs == {
        "index": "kefu-kb",
        "body": {"properties": {"kb_version": {"type": "keyword"}}},
    }
    properties = client.indices_created["kefu-kb"]["mappings"]["properties"]
    assert properties["kb_version"] == {"type": "keyword"}


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
def test_an_upsert_writes_the_chunk_its_vectors_and_kb_version_and_bumps_the_version() -> None:
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
            "kb_version": "1",
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
    # The version is reserved before the write and published after it
    reserve, publish = client.of("update")
    assert client.calls.index(reserve) < client.calls.index(bulk) < client.calls.index(publish)
    assert reserve.kwargs == {
        "index": "kefu-kb-meta",
        "id": "version",
        "body": {
            "script": {
                "source": "long version = ((Number) ctx._source.version).longValue(); "
                "long reserved = ctx._source.reserved == null ? 0L "
                ": ((Number) ctx._source.reserved).longValue(); "
                "ctx._source.reserved = (version > reserved ? version : reserved) + 1",
                "lang": "painless",
            },
            "upsert": {"version": 0, "reserved": 1},
        },
        "retry_on_conflict": 5,
        "_source": True,
    }
    assert publish.kwargs == {
        "index": "kefu-kb-meta",
        "id": "version",
        "body": {
            "script": {
                "source": "long next = ((Number) ctx._source.version).longValue() + 1; "
                "long reserved = ((Number) params.reserved).longValue(); "
                "ctx._source.version = next > reserved ? next : reserved",
                "lang": "painless",
                "params": {"reserved": 1},
            },
            "upsert": {"version": 1},
        },
        "retry_on_conflict": 5,
        "refresh": "wait_for",
    }
    assert index.version == "1"


def test_a_changed_chunk_carries_the_version_its_write_makes_and_the_others_keep_theirs() -> None:
    client = RecordingClient()
    index = _index(client)
    first, second = _chunks(2)
    index.upsert([first, second], _unit_rows(2, 2))
    assert index.version == "1"

    # When only the second chunk changes
    index.upsert([first, replace(second, text="new")], _unit_rows(2, 2))

    assert index.version == "2"
    assert client.docs[document_id("default", first.id)]["kb_version"] == "1"
    assert client.docs[document_id("default", second.id)]["kb_version"] == "2"
    # A chunk's own kb_version is not what it is stored at, nor part of its fingerprint
    index.upsert([replace(first, kb_version="7")], _unit_rows(1, 2))
    assert index.version == "2"


def test_a_write_behind_a_concurrent_reservation_takes_the_next_version() -> None:
    # Given another ingest that reserved version 4 and has not published it yet
    client = RecordingClient()
    client.meta = {"version": 3, "reserved": 4}

    _index(client).upsert([REFUND], [REFUND_VECTORS])

    # Then this write carries 5, and publishing makes it the version
    assert client.docs[REFUND_DOC]["kb_version"] == "5"
    assert client.meta == {"version": 5, "reserved": 5}


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

    calls = client.of("bulk")
    sizes = [len(call.kwargs["body"].encode()) for call in calls]
    documents = [call.kwargs["body"].count("\n") // 2 for call in calls]
    assert max(documents) < 25  # the byte bound, not the count, split these
    assert max(sizes) <= bound
    assert sum(documents) == 120
    written = [line["index"]["_id"] for line in _bulk_lines(client) if "index" in line]
    assert written == [document_id(chunk.tenant, chunk.id) for chunk in chunks]
    # Posted to the index's own `_bulk`, which the access policy scopes to this index
    assert {call.kwargs.get("index") for call in calls} == {"kefu-kb"}

    # With room in bytes, the document count splits them
    counted = RecordingClient()
    _index(counted, max_bulk_bytes=10**9, max_bulk_docs=25).upsert(chunks, _unit_rows(120, 2))
    per_request = [call.kwargs["body"].count("\n") // 2 for call in counted.of("bulk")]
    assert per_request == [25, 25, 25, 25, 20]


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
    assert client.of("update")[-1].kwargs["body"]["script"]["params"] == {"reserved": 0}
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
def test_a_meta_index_created_before_faq_heads_gets_their_fields() -> None:
    client = RecordingClient()
    _index(client).ensure_index()
    meta = client.indices_created["kefu-kb-meta"]["mappings"]["properties"]
    assert meta["head"] == {"type": "binary"}  # stored, never analysed or indexed
    del meta["head"], meta["tenant"]

    _index(client).ensure_index()

    _kb_version, put_mapping = client.of("indices.put_mapping")
    assert put_mapping.kwargs["index"] == "kefu-kb-meta"
    assert put_mapping.kwargs["body"]["properties"]["head"] == {"type": "binary"}
    assert meta["tenant"] == {"type": "keyword"}


def test_a_head_is_stored_base64_in_the_meta_index_per_tenant_and_moves_the_version() -> None:
    client = RecordingClient()
    index = _index(client)
    body = bytes(range(256)) * 3
    head_id = "head-" + hashlib.sha256(b"acme").hexdigest()

    assert index.save_head("acme", body, trained_at=7)

    # Through the meta index's _bulk and _mget: fixed paths for the access policies
    [call] = client.of("bulk")
    assert call.kwargs["index"] == "kefu-kb-meta"
    assert call.kwargs["refresh"] == "wait_for"
    assert _bulk_lines(client) == [
        {"index": {"_id": head_id, "version": 7, "version_type": "external_gte"}},
        {"tenant": "acme", "head": base64.b64encode(body).decode()},
    ]
    assert index.version == "1"
    assert index.load_head("acme") == body
    assert index.load_head("other") is None
    assert client.of("mget")[-2].kwargs == {"index": "kefu-kb-meta", "body": {"ids": [head_id]}}

    # A head trained on an older KB (a concurrent ingest that read less) is not written
    assert not index.save_head("acme", b"older", trained_at=6)
    assert index.load_head("acme") == body
    assert index.version == "1"

    # A removal decided on an older KB leaves a newer head alone, as a write does
    assert not index.save_head("acme", None, trained_at=6)
    assert index.save_head("acme", None, trained_at=8)
    assert not index.save_head("acme", None, trained_at=8)  # a head that is gone: no error

    assert index.load_head("acme") is None
    versioned = {"_id": head_id, "version_type": "external_gte"}
    assert _bulk_lines(client)[4:] == [
        {"delete": {**versioned, "version": version}} for version in (6, 8, 8)
    ]
    assert index.version == "2"


def test_a_head_write_the_cluster_refuses_is_an_error_and_the_version_stays() -> None:
    client = RecordingClient()
    index = _index(client)
    head_id = "head-" + hashlib.sha256(b"default").hexdigest()
    client.refuse[head_id] = (429, {"type": "es_rejected_execution_exception"})
    with pytest.raises(DependencyUnavailable, match="429"):
        index.save_head("default", b"x")
    client.refuse[head_id] = (400, {"type": "mapper_parsing_exception"})
    with pytest.raises(IndexWriteRejected, match="mapper_parsing_exception"):
        index.save_head("default", b"x")
    assert index.version == "0"

    def fail(**_: Any) -> None:
        raise ConnectionError("N/A", "refused", None)

    client.bulk = fail  # type: ignore[method-assign]
    with pytest.raises(DependencyUnavailable):
        index.save_head("default", b"x")


def test_a_head_larger_than_a_request_may_carry_is_refused_before_sending() -> None:
    client = RecordingClient()
    index = _index(client, max_bulk_bytes=1_000)
    with pytest.raises(IndexWriteRejected, match="FAQ head of tenant acme is 1,336 bytes"):
        index.save_head("acme", bytes(1_000))
    assert client.of("bulk") == []


def test_a_head_of_a_missing_meta_index_is_none() -> None:
    client = RecordingClient()

    def missing(**_: Any) -> None:
        raise NotFoundError(404, "index_not_found_exception", {})

    client.mget = missing  # type: ignore[method-assign]
    assert _index(client).load_head("default") is None


def test_the_tenants_with_a_head_are_read_from_the_meta_index_by_pages_without_the_heads() -> None:
    client = RecordingClient()
    page = [{"_source": {"tenant": f"t{n:04d}"}, "sort": [f"t{n:04d}"]} for n in range(1_000)]
    last = [{"_source": {"tenant": "zeta"}, "sort": ["zeta"]}]
    client.search_responses.extend([{"hits": {"hits": page}}, {"hits": {"hits": last}}])

    tenants = _index(client).head_tenants()

    assert tenants == [f"t{n:04d}" for n in range(1_000)] + ["zeta"]
    first, second = client.of("search")
    assert first.kwargs["index"] == "kefu-kb-meta"
    assert first.kwargs["body"] == {
        "size": 1_000,
        "_source": ["tenant"],
        "query": {"bool": {"filter": [{"exists": {"field": "tenant"}}]}},
        # A meta index from before heads has no tenant mapping: the sort must not fail on it
        "sort": [{"tenant": {"order": "asc", "unmapped_type": "keyword"}}],
    }
    assert second.kwargs["body"]["search_after"] == ["t0999"]


def test_a_missing_meta_index_has_no_tenants_with_a_head() -> None:
    client = RecordingClient()
    client.search_responses.append(NotFoundError(404, "index_not_found_exception", {}))
    assert _index(client).head_tenants() == []


def test_faq_questions_read_the_question_vectors_of_the_tenants_faq_entries_by_pages() -> None:
    client = RecordingClient()
    page = [
        {
            "_source": {"id": f"e{n:03d}", "questions": [{"vector": [1.0, 0.0, 0.0]}] * 2},
            "sort": [f"e{n:03d}"],
        }
        for n in range(200)
    ]
    last = [
        {"_source": {"id": "e200", "questions": [{"vector": [0.0, 0.6, 0.8]}]}, "sort": ["e200"]}
    ]
    client.search_responses.extend([{"hits": {"hits": page}}, {"hits": {"hits": last}}])

    found = _index(client).faq_questions("acme")

    assert len(found) == 201
    assert found["e000"].shape == (2, 3)
    np.testing.assert_allclose(found["e200"], [[0.0, 0.6, 0.8]])
    first, second = (call.kwargs["body"] for call in client.of("search"))
    assert first == {
        "size": 200,
        "_source": ["id", "questions.vector"],
        "query": {"bool": {"filter": [{"term": {"tenant": "acme"}}, {"term": {"kind": "faq"}}]}},
        "sort": [{"id": "asc"}],
    }
    assert second["search_after"] == ["e199"]


def test_a_missing_index_has_no_chunks_no_fingerprints_and_version_zero() -> None:
    client = RecordingClient()
    client.search_responses.append(NotFoundError(404, "index_not_found_exception", {}))
    index = _index(client)
    assert index.version == "0"
    assert index.count() == 0
    assert index.fingerprints("default") == {}
    assert client.of("count")[0].kwargs == {"index": "kefu-kb"}


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


def test_the_catalog_is_one_paged_scan_of_the_tenant_with_sources() -> None:
    client = RecordingClient()
    hits = [
        {
            "_id": document_id("acme", f"c{n:04d}"),
            "_source": {
                "id": f"c{n:04d}",
                "source": f"kb/{n % 3}.jsonl",
                "fingerprint": f"f{n}",
                "kind": "faq",
                "lang": "zh" if n % 2 else "en",
            },
            "sort": [f"c{n:04d}"],
        }
        for n in range(1_001)
    ]
    client.search_responses.extend(
        [{"hits": {"hits": hits[:1_000]}}, {"hits": {"hits": hits[1_000:]}}]
    )

    found = _index(client).catalog("acme")

    assert len(found) == 1_001
    assert found["c1000"] == ("kb/1.jsonl", "f1000", "faq", "en")
    first_call, second_call = (call.kwargs["body"] for call in client.of("search"))
    assert first_call == {
        "size": 1000,
        "_source": ["id", "source", "fingerprint", "kind", "lang"],
        "query": {"bool": {"filter": [{"term": {"tenant": "acme"}}]}},
        "sort": [{"id": "asc"}],
    }
    assert second_call["search_after"] == ["c0999"]


QUERY_VECTOR = np.array([0.6, 0.8, 0.0], dtype=np.float32)


def _fused(*chunk_ids: str) -> dict[str, Any]:
    """The candidates' `hybrid` search response: the default tenant's chunks, best fused first
    (the pipeline's scores, which nothing reads)."""
    return {
        "took": 4,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {
            "max_score": 1.0 if chunk_ids else None,
            "hits": [
                {
                    "_index": "kefu-kb",
                    "_id": document_id("default", chunk_id),
                    "_score": 1.0 - rank * 0.1,
                }
                for rank, chunk_id in enumerate(chunk_ids)
            ],
        },
    }


def _scored(chunk: Chunk, *, kb_version: str = "4", **named: float) -> dict[str, Any]:
    return {
        "_index": "kefu-kb",
        "_id": document_id(chunk.tenant, chunk.id),
        "_score": sum(named.values()),
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
            "kb_version": kb_version,
        },
        "matched_queries": named,
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
    """What a cluster answers for 退款多久: the fused candidates, then the exact scores."""
    client.search_responses.append(_fused("refund", "policy#2", "oos-weather"))
    client.search_responses.append(
        {
            "took": 3,
            "timed_out": False,
            "hits": {
                "hits": [
                    _scored(REFUND, nearest=1.9, centroid=1.8, content=1.6, lexical=3.1),
                    _scored(PASSAGE, kb_version="3", content=1.7, lexical=6.2),
                    _scored(OUTSIDE, nearest=0.8, content=0.9),
                ]
            },
        }
    )


def test_a_search_fuses_filtered_candidates_in_one_hybrid_query_then_scores_them_exactly() -> None:
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

    bm25 = {
        "multi_match": {
            "query": "退款多久",
            "fields": ["title.zh", "section.zh", "text.zh", "keys.zh"],
            "type": "best_fields",
        }
    }
    fused, exact = client.of("search")
    # One top-level hybrid query of four sub-queries, in the pipeline's weights' order
    assert fused.kwargs == {
        "index": "kefu-kb",
        "search_pipeline": "kefu-kb-hybrid",
        "body": {
            "size": 20,
            "_source": False,
            "query": {
                "hybrid": {
                    "queries": [
                        {
                            "nested": {
                                "path": "questions",
                                "score_mode": "max",
                                "query": {"knn": knn("questions.vector", nested_scope)},
                            }
                        },
                        {"knn": knn("centroid_vector", scope)},
                        {"knn": knn("content_vector", scope)},
                        {"bool": {"filter": scope, "must": [bm25]}},
                    ]
                }
            },
        },
    }

    def script(field: str) -> dict[str, Any]:
        return {
            "source": "knn_score",
            "lang": "knn",
            "params": {"field": field, "query_value": vector, "space_type": "innerproduct"},
        }

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
                "kb_version",
            ],
            "track_total_hits": False,
            "query": {
                "bool": {
                    "filter": [
                        {
                            "ids": {
                                "values": [
                                    REFUND_DOC,
                                    document_id("default", "policy#2"),
                                    document_id("default", "oos-weather"),
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
                        {"multi_match": {**bm25["multi_match"], "_name": "lexical"}},
                    ],
                }
            },
        },
    }
    # A search never writes the pipeline: the chat role may not
    assert client.of("search_pipeline.put") == client.of("search_pipeline.get") == []


def test_a_search_without_language_matches_both_analyzers_and_only_the_tenant() -> None:
    client = RecordingClient()
    _canned_search(client)
    _index(client).search(SearchQuery(text="refund", vector=QUERY_VECTOR))

    fused, exact = (call.kwargs["body"] for call in client.of("search"))
    lexical = fused["query"]["hybrid"]["queries"][3]["bool"]
    assert lexical["filter"] == [{"term": {"tenant": "default"}}]
    both = ["title", "section", "text", "keys", "title.zh", "section.zh", "text.zh", "keys.zh"]
    assert lexical["must"][0]["multi_match"]["fields"] == both
    assert exact["query"]["bool"]["should"][3]["multi_match"]["fields"] == both


def test_the_exact_scores_are_read_back_as_cosines_and_bm25_relative_to_the_best() -> None:
    client = RecordingClient()
    _canned_search(client)

    hits = _index(client).search(SearchQuery(text="退款多久", vector=QUERY_VECTOR, limit=3))

    # Each chunk as written, with the KB version it was written at
    assert [hit.chunk for hit in hits] == [
        replace(REFUND, kb_version="4"),
        replace(PASSAGE, kb_version="3"),
        replace(OUTSIDE, kb_version="4"),
    ]
    refund, passage, outside = hits
    # FAQ: cosines 0.9 (closest question), 0.8 (centroid), 0.6 (answer): (0.9+0.8+0.5*0.6)/2.5
    assert refund.nearest == pytest.approx(0.9)
    assert refund.dense == pytest.approx(0.8)
    assert refund.lexical == pytest.approx(0.5)  # 3.1 of the best BM25 6.2
    assert refund.score == pytest.approx(0.8)  # the default blend gives BM25 no weight
    # A passage is its text: dense = nearest = its content's cosine.
    assert passage.dense == passage.nearest == pytest.approx(0.7)
    assert passage.lexical == 1.0
    # An inner-product score below 1 is a negative cosine: 1 / (1 - ip) = 0.8 -> ip = -0.25.
    assert outside.dense == outside.nearest == pytest.approx(-0.25)
    assert outside.lexical == 0.0


def _knn_score(stored: list[float], query: np.ndarray) -> float:
    """The k-NN plugin's inner-product score of a stored vector."""
    inner = float(np.dot(stored, query))
    return 1.0 + inner if inner >= 0 else 1.0 / (1.0 - inner)


def _exact_scores(doc: dict[str, Any], query: np.ndarray) -> dict[str, float]:
    """The named scores a cluster returns for a stored document: `nearest` and `centroid` only
    match a document with questions."""
    named = {"content": _knn_score(doc["content_vector"], query)}
    if doc.get("questions"):
        named["nearest"] = max(_knn_score(q["vector"], query) for q in doc["questions"])
        named["centroid"] = _knn_score(doc["centroid_vector"], query)
    return named


def test_the_exact_scores_become_the_same_blend_as_the_embedded_index() -> None:
    # Given the same chunks and vectors in the embedded index and in OpenSearch
    chunks = [REFUND, PASSAGE, OUTSIDE]
    vectors = [
        REFUND_VECTORS,
        np.array([[0.8, 0.6, 0]], dtype=np.float32),
        np.array([[0, 0, 1], [0, -0.6, 0.8]], dtype=np.float32),  # a negative cosine
    ]
    embedded = EmbeddedIndex(":memory:")
    embedded.upsert(chunks, vectors)
    client = RecordingClient()
    index = _index(client)
    index.upsert(chunks, vectors)
    # and a cluster scoring the documents it stores as the k-NN scoring script does
    stored = [client.docs[document_id(chunk.tenant, chunk.id)] for chunk in chunks]
    client.search_responses.append(_fused(*(chunk.id for chunk in chunks)))
    client.search_responses.append(
        {
            "hits": {
                "hits": [
                    {**_scored(chunk), "matched_queries": _exact_scores(doc, QUERY_VECTOR)}
                    for chunk, doc in zip(chunks, stored, strict=True)
                ]
            }
        }
    )

    # When both are asked the same question
    query = SearchQuery(text="退款多久", vector=QUERY_VECTOR, limit=3)
    expected = {hit.chunk.id: hit for hit in embedded.search(query)}
    found = {hit.chunk.id: hit for hit in index.search(query)}

    # Then each chunk scores the same in both
    assert found.keys() == expected.keys() == {"refund", "policy#2", "oos-weather"}
    for chunk_id, hit in found.items():
        twin = expected[chunk_id]
        assert (hit.dense, hit.nearest, hit.score) == pytest.approx(
            (twin.dense, twin.nearest, twin.score), abs=1e-5
        ), chunk_id
    # The FAQ entry's is a blend of its views, not its closest question alone
    assert found["refund"].nearest == pytest.approx(0.8)
    assert found["refund"].dense == pytest.approx((0.8 + 1.28 / np.sqrt(3.2) + 0.5 * 0.6) / 2.5)
    assert found["oos-weather"].dense == pytest.approx(-0.48)
    embedded.close()


def test_a_chunk_written_before_kb_versions_were_stored_reads_back_with_an_empty_one() -> None:
    client = RecordingClient()
    old = _scored(PASSAGE, content=1.7)
    del old["_source"]["kb_version"]
    client.search_responses.extend([_fused("policy#2"), {"hits": {"hits": [old]}}])

    [hit] = _index(client).search(SearchQuery(text="退款", vector=QUERY_VECTOR))

    assert hit.chunk == PASSAGE
    assert hit.chunk.kb_version == ""
    assert hit.lexical == 0.0  # no BM25 match among the candidates


def test_the_lexical_weight_reorders_and_the_limit_cuts() -> None:
    client = RecordingClient()
    _canned_search(client)

    hits = _index(client, blend=Blend(lexical_weight=0.5)).search(
        SearchQuery(text="退款多久", vector=QUERY_VECTOR, limit=2)
    )

    # The passage's full BM25 credit (0.7 + 0.5 * 1.0) now outranks the FAQ (0.8 + 0.5 * 0.5).
    assert [(hit.chunk.id, round(hit.score, 6)) for hit in hits] == [
        ("policy#2", 1.2),
        ("refund", 1.05),
    ]


def test_no_candidates_means_no_hits_and_no_second_request() -> None:
    client = RecordingClient()
    client.search_responses.append(_fused())
    assert _index(client).search(SearchQuery(text="zzz", vector=QUERY_VECTOR)) == []
    assert len(client.of("search")) == 1


def test_a_search_of_a_missing_index_or_pipeline_says_the_index_is_not_ready() -> None:
    client = RecordingClient()
    client.search_responses.append(
        NotFoundError(404, "index_not_found_exception", {"error": {"index": "kefu-kb"}})
    )
    # What OpenSearch answers for a `search_pipeline` it does not know
    client.search_responses.append(
        RequestError(
            400,
            "illegal_argument_exception",
            {
                "error": {
                    "root_cause": [
                        {
                            "type": "illegal_argument_exception",
                            "reason": "Pipeline kefu-kb-hybrid is not defined",
                        }
                    ],
                    "type": "illegal_argument_exception",
                    "reason": "Pipeline kefu-kb-hybrid is not defined",
                },
                "status": 400,
            },
        )
    )
    index = _index(client)
    with pytest.raises(IndexNotReady, match="knowledge index does not exist"):
        index.search(SearchQuery(text="x", vector=QUERY_VECTOR))
    with pytest.raises(IndexNotReady, match="search pipeline kefu-kb-hybrid does not exist"):
        index.search(SearchQuery(text="x", vector=QUERY_VECTOR))
    assert client.of("search_pipeline.put") == []


def test_a_refused_query_or_a_lost_connection_makes_search_unavailable() -> None:
    client = RecordingClient()
    client.search_responses.append(
        RequestError(400, "search_phase_execution_exception", {"error": {"reason": "knn"}})
    )
    client.search_responses.append(
        TransportError(429, "es_rejected_execution_exception", {"error": {}})
    )
    client.search_responses.append(ConnectionError("N/A", "timed out", OSError()))
    index = _index(client)
    for _ in range(3):
        with pytest.raises(DependencyUnavailable, match="OpenSearch search failed"):
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
