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
