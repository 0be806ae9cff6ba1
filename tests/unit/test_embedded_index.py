from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kefu.adapters.embedded_index import EmbeddedIndex
from kefu.adapters.embedders import HashingEmbedder
from kefu.models import Chunk
from kefu.ports import SearchQuery
from kefu.scoring import Blend

EMBEDDER = HashingEmbedder()


def faq(chunk_id: str, question: str, answer: str, *, lang: str = "en", tenant: str = "default"):
    return Chunk(
        id=chunk_id,
        kind="faq",
        lang=lang,  # type: ignore[arg-type]
        title=question,
        text=answer,
        keys=(question,),
        tenant=tenant,
    )


def vectors(chunk: Chunk) -> np.ndarray:
    return np.vstack(
        [EMBEDDER.embed_passages([chunk.content]), EMBEDDER.embed_queries(list(chunk.keys))]
    )


def put(index: EmbeddedIndex, *chunks: Chunk) -> None:
    index.upsert(list(chunks), [vectors(c) for c in chunks])


def ask(index: EmbeddedIndex, text: str, **kwargs) -> list[str]:
    query = SearchQuery(text=text, vector=EMBEDDER.embed_queries([text])[0], **kwargs)
    return [hit.chunk.id for hit in index.search(query)]


REFUND = faq("refund", "How long does a refund take?", "1-3 business days.")
PASSWORD = faq("password", "How do I reset my password?", "Use the SMS code.")
REFUND_ZH = faq("refund-zh", "退款多久到账？", "1–3 个工作日。", lang="zh")


def test_the_matching_entry_ranks_first_with_both_scores() -> None:
    index = EmbeddedIndex(":memory:", blend=Blend(lexical_weight=0.05))
    put(index, REFUND, PASSWORD, REFUND_ZH)
    query = SearchQuery(
        text="refund take long", vector=EMBEDDER.embed_queries(["refund take long"])[0]
    )
    hits = index.search(query)
    assert hits[0].chunk == replace(REFUND, kb_version="1")
    assert hits[0].lexical == 1.0
    assert hits[0].dense > hits[1].dense


def test_bm25_matches_outside_the_tenant_and_language_are_left_out_of_the_search() -> None:
    # The strongest BM25 matches are in another tenant and another language
    index = EmbeddedIndex(":memory:", blend=Blend(lexical_weight=0.5))
    put(
        index,
        faq("acme-refund", "refund refund refund?", "Ask acme.", tenant="acme"),
        faq("zh-refund", "refund 退款 refund 多久？", "1–3 个工作日。", lang="zh"),
        REFUND,
        PASSWORD,
    )

    query = SearchQuery(
        text="refund refund",
        vector=EMBEDDER.embed_queries(["refund refund"])[0],
        language="en",
        tenant="default",
    )
    hits = index.search(query)

    assert [hit.chunk.id for hit in hits] == ["refund", "password"]
    assert hits[0].lexical == 1.0  # relative to the best match the search may return
    assert hits[1].lexical == 0.0
    assert [h.chunk.id for h in index.search(replace(query, tenant="acme"))] == ["acme-refund"]
    chinese = index.search(replace(query, language="zh"))
    assert [(h.chunk.id, h.lexical) for h in chinese] == [("zh-refund", 1.0)]


def test_language_and_tenant_filters_exclude_other_content() -> None:
    index = EmbeddedIndex(":memory:")
    other_tenant = faq("t2-refund", "How long does a refund take?", "Ask us.", tenant="acme")
    put(index, REFUND, REFUND_ZH, other_tenant)
    assert ask(index, "退款多久", language="zh") == ["refund-zh"]
    assert "refund-zh" not in ask(index, "refund", language="en")
    assert ask(index, "refund", tenant="acme") == ["t2-refund"]
    assert ask(index, "refund", tenant="nobody") == []


def test_the_index_persists_to_its_file(tmp_path: Path) -> None:
    path = tmp_path / "kb" / "index.sqlite3"
    index = EmbeddedIndex(path)
    put(index, REFUND, PASSWORD)
    index.close()

    reopened = EmbeddedIndex(path)
    assert reopened.count() == 2
    assert ask(reopened, "reset my password")[0] == "password"


def test_an_unchanged_chunk_keeps_the_version_and_a_changed_one_replaces_it() -> None:
    index = EmbeddedIndex(":memory:")
    put(index, REFUND)
    version = index.version
    put(index, REFUND)
    assert index.version == version

    changed = faq("refund", "How long does a refund take?", "Within 24 hours now.")
    put(index, changed)
    assert index.version != version
    assert index.count() == 1
    query = SearchQuery(text="refund", vector=EMBEDDER.embed_queries(["refund"])[0])
    assert index.search(query)[0].chunk.text == "Within 24 hours now."


def test_deleted_chunks_are_no_longer_found() -> None:
    index = EmbeddedIndex(":memory:")
    put(index, REFUND, PASSWORD)
    index.delete(["refund"], tenant="default")
    assert ask(index, "refund take long") == ["password"]
    assert index.fingerprints("default").keys() == {"password"}


def test_a_vector_count_that_does_not_match_the_keys_is_refused_and_changes_nothing() -> None:
    index = EmbeddedIndex(":memory:")
    with pytest.raises(ValueError, match="one vector"):
        index.upsert([REFUND], [EMBEDDER.embed_queries(["only one row"])])
    assert index.count() == 0
    assert index.version == "0"


def test_an_empty_index_finds_nothing() -> None:
    assert ask(EmbeddedIndex(":memory:"), "anything") == []


def _unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_an_faq_is_scored_on_its_nearest_question_its_centroid_and_its_answer() -> None:
    index = EmbeddedIndex(
        ":memory:", blend=Blend(centroid_weight=1.0, content_weight=0.5, lexical_weight=0.0)
    )
    entry = Chunk(id="e", kind="faq", lang="en", title="q1", text="a", keys=("q1", "q2"))
    content, q1, q2 = _unit(1, 0, 0), _unit(0, 1, 0), _unit(0, 0.6, 0.8)
    index.upsert([entry], [np.vstack([content, q1, q2])])
    query = _unit(0.2, 1.0, 0.1)
    [hit] = index.search(SearchQuery(text="zzz", vector=query))
    centroid = (q1 + q2) / np.linalg.norm(q1 + q2)
    nearest = max(float(q1 @ query), float(q2 @ query))
    expected = (nearest + float(centroid @ query) + 0.5 * float(content @ query)) / 2.5
    assert hit.nearest == pytest.approx(nearest, abs=1e-6)
    assert hit.dense == pytest.approx(expected, abs=1e-6)


def test_an_entry_asked_many_ways_outranks_one_with_a_single_lucky_question() -> None:
    index = EmbeddedIndex(":memory:")
    lucky = Chunk(id="lucky", kind="faq", lang="en", title="l", text="l", keys=("a", "b", "c"))
    steady = Chunk(id="steady", kind="faq", lang="en", title="s", text="s", keys=("d", "e", "f"))
    query = _unit(1, 0, 0, 0)
    index.upsert(
        [lucky, steady],
        [
            # One question nearly the query, the others far from it.
            np.vstack(
                [_unit(0, 0, 0, 1), _unit(1, 0.25, 0, 0), _unit(0, 1, 0, 0), _unit(0, 0, 1, 0)]
            ),
            # Every question close to the query.
            np.vstack(
                [_unit(1, 0, 0, 1), _unit(1, 0.4, 0, 0), _unit(1, 0, 0.4, 0), _unit(1, 0, 0, 0.4)]
            ),
        ],
    )
    hits = index.search(SearchQuery(text="zzz", vector=query))
    assert [h.chunk.id for h in hits] == ["steady", "lucky"]
    assert hits[1].nearest > hits[0].nearest


def test_out_of_scope_examples_are_scored_on_their_nearest_example() -> None:
    index = EmbeddedIndex(":memory:")
    outside = Chunk(id="oos", kind="out_of_scope", lang="en", title="", text="", keys=("x", "y"))
    index.upsert([outside], [np.vstack([_unit(0, 0, 1), _unit(1, 0, 0), _unit(0, 1, 0)])])
    [hit] = index.search(SearchQuery(text="zzz", vector=_unit(1, 0.1, 0)))
    assert hit.dense == hit.nearest == pytest.approx(float(_unit(1, 0.1, 0)[0]), abs=1e-6)


def test_fingerprints_can_be_listed_per_source() -> None:
    index = EmbeddedIndex(":memory:")
    a = Chunk(id="a", kind="faq", lang="en", title="q", text="x", keys=("q",), source="one.jsonl")
    b = Chunk(id="b", kind="faq", lang="en", title="r", text="y", keys=("r",), source="two.jsonl")
    put(index, a, b)
    assert set(index.fingerprints("default")) == {"a", "b"}
    assert set(index.fingerprints("default", source="two.jsonl")) == {"b"}
    assert index.fingerprints("default", source="gone.jsonl") == {}


def test_a_search_can_be_limited_to_a_category() -> None:
    index = EmbeddedIndex(":memory:")
    refund = faq("refund", "How long does a refund take?", "1-3 business days.")
    shipping = Chunk(
        id="ship",
        kind="faq",
        lang="en",
        title="How long does delivery take?",
        text="2-4 days.",
        keys=("How long does delivery take?",),
        category="shipping",
    )
    put(index, refund, shipping)
    assert ask(index, "How long does a refund take?", category="shipping") == ["ship"]
    assert ask(index, "How long does a refund take?")[0] == "refund"


def test_chunks_carry_the_kb_version_they_were_written_at() -> None:
    index = EmbeddedIndex(":memory:")
    put(index, REFUND, PASSWORD)
    assert index.version == "1"
    put(index, REFUND, faq("password", "How do I reset my password?", "Use the e-mail link."))
    assert index.version == "2"
    hits = {
        h.chunk.id: h.chunk.kb_version
        for h in index.search(
            SearchQuery(text="x", vector=EMBEDDER.embed_queries(["password refund"])[0])
        )
    }
    assert hits == {"refund": "1", "password": "2"}


def test_without_a_lexical_share_bm25_is_reported_but_not_scored() -> None:
    # The FAQ head ranks with the lexical score even when the fused score has none of it
    index = EmbeddedIndex(":memory:")
    put(index, REFUND, PASSWORD)
    hits = index.search(
        SearchQuery(text="refund take long", vector=EMBEDDER.embed_queries(["refund take"])[0])
    )
    assert hits[0].chunk.id == "refund"
    assert hits[0].lexical == 1.0
    assert all(hit.score == hit.dense for hit in hits)
