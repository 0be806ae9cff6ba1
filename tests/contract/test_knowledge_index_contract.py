"""One retrieval contract, run against every `KnowledgeIndex` implementation.

The embedded index always runs. The OpenSearch index runs when `OPENSEARCH_URL` points at a
cluster the tests may reach (loopback only, e.g. a local container or a tunnel to a domain),
each test in its own index and search pipeline, deleted after it; the cluster needs the
neural-search plugin (the pipeline's normalization processor). A cluster without the smartcn
plugin can run the suite with `OPENSEARCH_ZH_ANALYZER=cjk`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from kefu.adapters.embedded_index import EmbeddedIndex
from kefu.adapters.embedders import HashingEmbedder
from kefu.models import Chunk, SearchHit
from kefu.ports import KnowledgeIndex, SearchQuery

EMBEDDER = HashingEmbedder()


@pytest.fixture(params=["embedded", "opensearch"])
def index(request: pytest.FixtureRequest) -> Iterator[KnowledgeIndex]:
    if request.param == "embedded":
        embedded = EmbeddedIndex(":memory:")
        yield embedded
        embedded.close()
        return
    url = os.environ.get("OPENSEARCH_URL")
    if not url:
        pytest.skip("OPENSEARCH_URL is not set: the OpenSearch leg of the contract needs a cluster")
    from opensearchpy import OpenSearch

    from kefu.adapters.opensearch import OpenSearchIndex

    # A test cluster on loopback often has a self-signed certificate.
    client = OpenSearch(hosts=[url], verify_certs=False, ssl_show_warn=False)
    remote = OpenSearchIndex(
        client,
        f"kefu-contract-{uuid.uuid4().hex[:12]}",
        dim=EMBEDDER.dim,
        chinese_analyzer=os.environ.get("OPENSEARCH_ZH_ANALYZER", "smartcn"),
    )
    remote.ensure_index()
    try:
        yield remote
    finally:
        client.indices.delete(index=[remote.name, remote.meta_index], ignore_unavailable=True)
        client.search_pipeline.delete(id=remote.search_pipeline, ignore=404)


def entry(
    chunk_id: str,
    question: str,
    answer: str,
    *,
    lang: str = "en",
    tenant: str = "default",
    category: str = "",
    source: str = "faq.jsonl",
    similar: tuple[str, ...] = (),
) -> Chunk:
    return Chunk(
        id=chunk_id,
        kind="faq",
        lang=lang,  # type: ignore[arg-type]
        title=question,
        text=answer,
        keys=(question, *similar),
        category=category,
        source=source,
        tenant=tenant,
    )


def put(index: KnowledgeIndex, *chunks: Chunk) -> None:
    index.upsert(
        list(chunks),
        [
            np.vstack([EMBEDDER.embed_passages([c.content]), EMBEDDER.embed_queries(list(c.keys))])
            for c in chunks
        ],
    )


def ask(index: KnowledgeIndex, text: str, **kwargs: Any) -> list[str]:
    return [hit.chunk.id for hit in search(index, text, **kwargs)]


def search(index: KnowledgeIndex, text: str, **kwargs: Any) -> list[SearchHit]:
    query = SearchQuery(text=text, vector=EMBEDDER.embed_queries([text])[0], **kwargs)
    return index.search(query)


def written(chunk: Chunk, at: str) -> Chunk:
    """A chunk as the index gives it back: as written, at KB version `at`."""
    return replace(chunk, kb_version=at)


REFUND = entry(
    "refund",
    "How long does a refund take?",
    "Refunds reach your account in 1-3 business days.",
    similar=("When will I get my money back?",),
    category="payments",
)
PASSWORD = entry("password", "How do I reset my password?", "Use the SMS code.", category="account")
DELIVERY = entry("delivery", "How long does delivery take?", "2-4 days.", category="shipping")
REFUND_ZH = entry("refund-zh", "退款多久到账？", "1–3 个工作日。", lang="zh", category="payments")


def test_the_matching_entry_is_found_first(index: KnowledgeIndex) -> None:
    put(index, REFUND, PASSWORD, DELIVERY, REFUND_ZH)

    hits = search(index, "How long does a refund take?")

    assert hits[0].chunk == written(REFUND, index.version)
    assert hits[0].dense > hits[1].dense
    assert hits[0].nearest == pytest.approx(1.0, abs=1e-4)  # its own question, word for word


def test_language_tenant_and_category_filters_exclude_other_content(
    index: KnowledgeIndex,
) -> None:
    acme = entry("acme-refund", "How long does a refund take?", "Ask Acme.", tenant="acme")
    put(index, REFUND, PASSWORD, DELIVERY, REFUND_ZH, acme)

    assert ask(index, "退款多久到账", language="zh") == ["refund-zh"]
    assert "refund-zh" not in ask(index, "refund", language="en")
    assert ask(index, "How long does a refund take?", tenant="acme") == ["acme-refund"]
    assert "acme-refund" not in ask(index, "How long does a refund take?")
    assert ask(index, "refund", tenant="nobody") == []
    assert ask(index, "How long does a refund take?", category="shipping") == ["delivery"]


def test_an_unchanged_upsert_changes_nothing_and_a_changed_chunk_replaces_the_old(
    index: KnowledgeIndex,
) -> None:
    put(index, REFUND, PASSWORD)
    version = index.version
    put(index, REFUND, PASSWORD)
    assert index.version == version

    changed = entry(
        "refund",
        "How long does a refund take?",
        "Within 24 hours now.",
        similar=("When will I get my money back?",),
        category="payments",
    )
    put(index, changed)

    assert index.version != version
    assert index.count() == 2
    assert search(index, "How long does a refund take?")[0].chunk.text == "Within 24 hours now."


def test_chunks_carry_the_kb_version_they_were_written_at(index: KnowledgeIndex) -> None:
    def written_at() -> dict[str, str]:
        hits = search(index, "refund password", limit=10)
        return {hit.chunk.id: hit.chunk.kb_version for hit in hits}

    # Given two chunks written together
    put(index, REFUND, PASSWORD)
    first = index.version
    assert written_at() == {"refund": first, "password": first}

    # When the same chunks are written again, nothing changes
    put(index, REFUND, PASSWORD)
    assert index.version == first
    assert written_at() == {"refund": first, "password": first}

    # When one of them changes, it alone carries the version its write made
    put(index, REFUND, replace(PASSWORD, text="Use the e-mail link."))
    assert index.version != first
    assert written_at() == {"refund": first, "password": index.version}


def test_deleted_chunks_are_gone_from_search_count_and_fingerprints(index: KnowledgeIndex) -> None:
    put(index, REFUND, PASSWORD)
    version = index.version

    index.delete(["refund", "never-written"], tenant="default")

    assert "refund" not in ask(index, "How long does a refund take?")
    assert index.count() == 1
    assert set(index.fingerprints("default")) == {"password"}
    assert index.version != version


def test_fingerprints_are_listed_per_tenant_and_source(index: KnowledgeIndex) -> None:
    other = entry("other", "Where is my parcel?", "Track it.", source="more.jsonl")
    acme = entry("acme", "Where is my parcel?", "Track it.", tenant="acme")
    put(index, REFUND, other, acme)

    assert set(index.fingerprints("default")) == {"refund", "other"}
    assert set(index.fingerprints("default", source="more.jsonl")) == {"other"}
    assert set(index.fingerprints("acme")) == {"acme"}
    assert index.fingerprints("default", source="gone.jsonl") == {}


def test_the_catalog_gives_each_chunks_source_and_fingerprint_per_tenant(
    index: KnowledgeIndex,
) -> None:
    other = entry("other", "Where is my parcel?", "Track it.", source="more.jsonl")
    acme = entry("acme", "Where is my parcel?", "Track it.", tenant="acme")
    put(index, REFUND, REFUND_ZH, other, acme)

    catalog = index.catalog("default")
    fingerprints = index.fingerprints("default")

    assert set(catalog) == {"refund", "refund-zh", "other"}
    assert catalog["refund-zh"].lang == "zh"
    assert catalog["other"].source == "more.jsonl"
    assert catalog["refund"].source == REFUND.source
    assert (catalog["refund"].kind, catalog["refund"].lang) == ("faq", "en")
    assert {i: c.fingerprint for i, c in catalog.items()} == fingerprints
    assert set(index.catalog("acme")) == {"acme"}
    assert index.catalog("nobody") == {}


def test_one_chunk_id_in_two_tenants_stays_two_chunks(index: KnowledgeIndex) -> None:
    # Given the same FAQ file ingested for two tenants: the same chunk id, different answers
    acme = entry(
        "refund",
        "How long does a refund take?",
        "Acme refunds within a week.",
        similar=("When will I get my money back?",),
        category="payments",
        tenant="acme",
    )
    put(index, REFUND, PASSWORD)
    default_at = index.version
    put(index, acme)
    acme_at = index.version

    # Then each tenant finds its own answer and lists its own fingerprint
    assert index.count() == 3
    assert search(index, "How long does a refund take?")[0].chunk == written(REFUND, default_at)
    acme_hit = search(index, "How long does a refund take?", tenant="acme")[0]
    assert acme_hit.chunk == written(acme, acme_at)
    assert set(index.fingerprints("default")) == {"refund", "password"}
    assert set(index.fingerprints("acme")) == {"refund"}
    assert index.fingerprints("acme")["refund"] != index.fingerprints("default")["refund"]

    # When acme deletes the entry, the default tenant's stays
    index.delete(["refund"], tenant="acme")

    assert ask(index, "How long does a refund take?", tenant="acme") == []
    assert index.fingerprints("acme") == {}
    assert search(index, "How long does a refund take?")[0].chunk == written(REFUND, default_at)
    assert set(index.fingerprints("default")) == {"refund", "password"}
    assert index.count() == 2


def test_passages_and_out_of_scope_examples_round_trip(index: KnowledgeIndex) -> None:
    passage = Chunk(
        id="policy#1",
        kind="passage",
        lang="en",
        title="Refund policy",
        text="Refunds are returned to the original payment method.",
        keys=(),
        section="Method",
        source="policy.en.md",
    )
    outside = Chunk(
        id="oos",
        kind="out_of_scope",
        lang="en",
        title="",
        text="",
        keys=("What is the weather tomorrow?", "Tell me a joke"),
        source="out_of_scope.jsonl",
    )
    put(index, passage, outside, PASSWORD)

    by_id = {hit.chunk.id: hit for hit in search(index, "What is the weather tomorrow?")}
    assert by_id["oos"].chunk == written(outside, index.version)
    assert by_id["oos"].dense == by_id["oos"].nearest == pytest.approx(1.0, abs=1e-4)
    policy = search(index, "Refunds returned to the original payment method")[0]
    assert policy.chunk == written(passage, index.version)
    assert policy.dense == policy.nearest


def test_the_limit_is_respected(index: KnowledgeIndex) -> None:
    put(index, *(entry(f"e{n}", f"Question number {n} about orders", "A.") for n in range(12)))

    assert len(search(index, "question about orders", limit=3)) == 3
    assert len(search(index, "question about orders", limit=10)) == 10


def test_faq_questions_are_the_question_vectors_of_the_tenants_faq_entries(
    index: KnowledgeIndex,
) -> None:
    acme = entry("acme-refund", "Refund?", "Ask Acme.", tenant="acme")
    outside = Chunk(
        id="scope", kind="out_of_scope", lang="en", title="", text="", keys=("Weather today?",)
    )
    passage = Chunk(
        id="guide#1", kind="passage", lang="en", title="Guide", text="Returns.", keys=()
    )
    put(index, REFUND, PASSWORD, acme, outside, passage)

    found = index.faq_questions("default")

    assert sorted(found) == ["password", "refund"]
    assert found["refund"].shape == (2, EMBEDDER.dim)  # its question, then its similar one
    expected = EMBEDDER.embed_queries(list(REFUND.keys))
    np.testing.assert_allclose(
        sorted(found["refund"].tolist()), sorted(expected.tolist()), atol=1e-5
    )
    assert list(index.faq_questions("acme")) == ["acme-refund"]
    assert index.faq_questions("nobody") == {}


def test_a_head_is_kept_per_tenant_and_storing_it_moves_the_version(
    index: KnowledgeIndex,
) -> None:
    put(index, REFUND)
    before = index.version
    assert index.load_head("default") is None

    index.save_head("default", b"\x00head-one\xff")
    index.save_head("acme", b"head-of-acme")

    assert index.load_head("default") == b"\x00head-one\xff"
    assert index.load_head("acme") == b"head-of-acme"
    assert index.version != before

    moved = index.version
    assert index.save_head("default", None)
    assert index.load_head("default") is None
    assert index.load_head("acme") == b"head-of-acme"
    assert index.version != moved


def test_the_tenants_with_a_head_are_listed_sorted(index: KnowledgeIndex) -> None:
    put(index, REFUND)
    assert index.head_tenants() == []

    for tenant in ("zeta", "acme", "default"):
        index.save_head(tenant, f"head of {tenant}".encode())
    assert index.head_tenants() == ["acme", "default", "zeta"]

    index.save_head("default", None)
    assert index.head_tenants() == ["acme", "zeta"]


def test_a_head_trained_on_an_older_kb_never_replaces_a_newer_one(index: KnowledgeIndex) -> None:
    put(index, REFUND)
    assert index.save_head("default", b"trained at 5", trained_at=5)
    settled = index.version

    assert not index.save_head("default", b"trained at 4", trained_at=4)
    assert index.load_head("default") == b"trained at 5"
    assert index.version == settled  # nothing written, nothing for the answer cache to drop
    assert index.save_head("default", b"trained at 5 again", trained_at=5)
    assert index.save_head("default", b"trained at 9", trained_at=9)
    assert index.load_head("default") == b"trained at 9"
    assert not index.save_head("default", None, trained_at=8)  # decided on an older KB
    assert index.load_head("default") == b"trained at 9"
    assert index.save_head("default", None, trained_at=10)
    assert index.save_head("default", b"trained at 11", trained_at=11)  # after a removal
    assert index.load_head("default") == b"trained at 11"
    assert not index.save_head("nobody", None, trained_at=12)  # no head to remove
