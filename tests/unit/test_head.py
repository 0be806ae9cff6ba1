"""The FAQ head: trained on question vectors, serialised, and used to re-rank candidates."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kb_ingest import head_training
from kb_ingest.head_training import Training
from kefu.adapters.embedded_index import EmbeddedIndex
from kefu.decision import Thresholds, decide
from kefu.errors import DependencyUnavailable
from kefu.head import FaqHead, Ranking
from kefu.models import Chunk, SearchHit
from kefu.retrieval import Retriever
from kefu.scoring import Blend

DIM = 8
RNG = np.random.default_rng(7)


def _unit(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=-1, keepdims=True)).astype(np.float32)


# Three entries whose questions scatter around their own direction, with a shared component:
# what separates them is not the same as what makes them similar.
CENTRES = _unit(np.eye(DIM)[:3] + 0.5)
QUESTIONS = {
    entry: _unit(centre + 0.1 * RNG.standard_normal((6, DIM)))
    for entry, centre in zip(("card", "refund", "tracking"), CENTRES, strict=True)
}


def _unseen(centre: np.ndarray, seed: int = 5) -> np.ndarray:
    """A question of the entry at `centre` that the head was not trained on."""
    return _unit(centre + 0.1 * np.random.default_rng(seed).standard_normal(DIM))


def _own_probabilities(
    trained: FaqHead | None, entries: list[str], *, first: bool = True
) -> list[float]:
    """For each of `entries` (in `CENTRES` order), the probability an unseen question of it
    gives it among `entries`, with finite weights; with `first`, asserts it is the highest."""
    assert trained is not None
    assert np.isfinite(trained.weights).all()
    assert np.isfinite(trained.bias).all()
    own = []
    for entry, centre in zip(entries, CENTRES, strict=True):
        probabilities = trained.probabilities(_unseen(centre), entries)
        assert probabilities is not None
        if first:
            assert max(probabilities, key=probabilities.__getitem__) == entry
        own.append(probabilities[entry])
    return own


def _nearest_training(entries: int) -> Training:
    """Training as a KB over the full-softmax budget is trained: on each question's `entries`
    nearest entries (its own included), in small batches."""
    return Training(max_full_cells=0, nearest_entries=entries, batch=8)


def _stored(trained: FaqHead, **arrays: np.ndarray) -> bytes:
    """A stored head as another release could have written it: the weights and bias of
    `trained`, and `arrays` (`format` 1 unless given) in place of what this release stores."""
    stored: dict[str, Any] = {
        "format": np.array(1),
        "ids": np.array(trained.ids, dtype=np.str_),
        "weights": trained.weights.astype(np.float16),
        "bias": trained.bias,
        **arrays,
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **stored)
    return buffer.getvalue()


def test_a_head_ranks_each_entrys_unseen_questions_first() -> None:
    trained = head_training.train(QUESTIONS)
    assert trained is not None
    assert trained.ids == ("card", "refund", "tracking")
    for entry, centre in zip(trained.ids, CENTRES, strict=True):
        unseen = _unit(centre + 0.1 * np.random.default_rng(3).standard_normal(DIM))
        probabilities = trained.probabilities(unseen, trained.ids)
        assert probabilities is not None
        assert max(probabilities, key=probabilities.__getitem__) == entry
        assert sum(probabilities.values()) == pytest.approx(1.0)


def test_training_is_deterministic_and_survives_serialisation() -> None:
    first, second = head_training.train(QUESTIONS), head_training.train(QUESTIONS)
    assert first is not None
    assert second is not None
    assert first.to_bytes() == second.to_bytes()
    restored = FaqHead.from_bytes(first.to_bytes())
    assert restored.ids == first.ids
    # float16 weights in storage: within a thousandth of what was trained
    np.testing.assert_allclose(restored.weights, first.weights, rtol=1e-3, atol=1e-3)
    assert restored.weights.dtype == np.float32
    np.testing.assert_array_equal(restored.bias, first.bias)
    assert restored.dim == DIM


def test_fewer_than_two_entries_have_no_head() -> None:
    assert head_training.train({}) is None
    assert head_training.train({"card": QUESTIONS["card"]}) is None
    empty = np.zeros((0, DIM), dtype=np.float32)
    assert head_training.train({"card": QUESTIONS["card"], "empty": empty}) is None


def test_probabilities_are_taken_among_the_candidates_only_and_need_every_one_known() -> None:
    trained = head_training.train(QUESTIONS)
    assert trained is not None
    question = QUESTIONS["refund"][0]
    among_two = trained.probabilities(question, ["card", "tracking"])
    assert among_two is not None
    assert sum(among_two.values()) == pytest.approx(1.0)
    assert trained.probabilities(question, ["card", "new-entry"]) is None
    assert trained.probabilities(question, []) is None


def test_a_head_of_another_format_is_refused() -> None:
    trained = head_training.train(QUESTIONS)
    assert trained is not None
    newer = _stored(trained, format=np.array(2), spread_pairs=trained.spread)
    with pytest.raises(ValueError, match="FAQ head format 2 is not 1"):
        FaqHead.from_bytes(newer)
    assert head_training.outdated(newer)


# -- in the retriever -------------------------------------------------------------------------
class _Fixed:
    """An embedder that maps known texts to fixed vectors."""

    name = "fixed"
    dim = DIM

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return np.vstack([self.vectors[t] for t in texts])

    embed_passages = embed_queries


def _faq(entry: str, questions: int) -> Chunk:
    return Chunk(
        id=entry,
        kind="faq",
        lang="en",
        title=f"{entry} 0",
        text=f"answer {entry}",
        keys=tuple(f"{entry} {n}" for n in range(questions)),
    )


def _indexed() -> EmbeddedIndex:
    index = EmbeddedIndex(":memory:", blend=Blend(centroid_weight=0.0, content_weight=0.0))
    for entry, rows in QUESTIONS.items():
        content = _unit(np.ones(DIM))
        index.upsert([_faq(entry, len(rows))], [np.vstack([content, rows])])
    return index


# What the ranking adds to the head's logits for a candidate's similarity, by default
WEIGHT, SHARE = Ranking().similarity_weight, Ranking().spread_share
THRESHOLDS = Thresholds(fit=0.99, head=0.6, similarity=0.99, passage=1.0)


def _mixed_up(sign: float, nuisance: float) -> list[float]:
    """Coordinate 0 tells "card" (+) from "refund" (-); coordinate 1 varies within both."""
    return [0.1 * sign, nuisance, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_the_retriever_reranks_the_faq_candidates_by_the_stored_head() -> None:
    # The head alone (its spread correction, which favours the broad "card", is tested below)
    head_alone = Ranking(spread_share=0.0)
    # "card" is asked in ways spread far along coordinate 1, "refund" near its middle
    card = _unit(np.array([_mixed_up(+1, n) for n in (1.5, 0.5, -0.5, -1.5)]))
    refund = _unit(np.array([_mixed_up(-1, n) for n in (0.0, -0.3, 0.3)]))
    index = EmbeddedIndex(":memory:", blend=Blend(centroid_weight=0.0, content_weight=0.0))
    for entry, rows in (("card", card), ("refund", refund)):
        index.upsert([_faq(entry, len(rows))], [np.vstack([_unit(np.ones(DIM)), rows])])
    # On the "refund" side of coordinate 0, but far out on coordinate 1 like a "card" question
    question = _unit(np.array(_mixed_up(-1.0, 0.8)))
    retriever = Retriever(
        embedder=_Fixed({"q": question}),  # type: ignore[arg-type]
        index=index,
        thresholds=Thresholds(fit=0.5, head=0.55, similarity=0.5, passage=1.0),
        ranking=head_alone,
        head_refresh_seconds=0.0,
    )
    before = retriever.search("q", language=None, tenant="default")
    assert [h.chunk.id for h in before] == ["card", "refund"]  # by the nearest question
    assert all(h.probability is None for h in before)  # no head stored yet

    trained = head_training.train(index.faq_questions("default"))
    assert trained is not None
    index.save_head("default", trained.to_bytes())
    after = retriever.search("q", language=None, tenant="default")

    assert [h.chunk.id for h in after] == ["refund", "card"]
    stored = FaqHead.from_bytes(trained.to_bytes())
    ranked = stored.rank(
        question,
        ["card", "refund"],
        [h.dense for h in before],
        [h.lexical for h in before],
        head_alone,
    )
    assert ranked is not None
    ranking, own, fit = ranked
    assert own == stored.probabilities(question, ["card", "refund"])
    # Ordered by the head with the similarity; each carries the head's own probability, which
    # the decision to answer reads
    assert ranking["refund"] > ranking["card"]
    assert [h.probability for h in after] == [own["refund"], own["card"]]
    assert [h.fit for h in after] == [fit["refund"], fit["card"]]
    assert own != ranking
    assert after[0].dense < before[0].dense  # the head's choice, not the nearest
    decision = decide(after, retriever.thresholds)
    assert decision.kind == "faq"
    assert decision.hits[0].chunk.id == "refund"


def test_the_similarity_is_taken_relative_to_each_entrys_spread() -> None:
    broad = _unit(np.array([_mixed_up(+1, n) for n in (1.5, 0.5, -0.5, -1.5)]))
    narrow = _unit(np.array([_mixed_up(-1, n) for n in (0.0, -0.3, 0.3)]))
    # A third entry elsewhere: beside it, the broad entry's questions are more alike than two
    # questions of different entries, which gives it a spread
    elsewhere = _unit(-np.eye(DIM)[4] + 0.1 * np.random.default_rng(1).standard_normal((4, DIM)))
    trained = head_training.train({"broad": broad, "narrow": narrow, "elsewhere": elsewhere})
    assert trained is not None
    spread = dict(zip(trained.ids, trained.spread.tolist(), strict=True))
    # The broad entry's questions are less alike
    assert spread["broad"] < spread["narrow"] < 1.0
    question = _unit(np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    ranked = trained.rank(question, ["broad", "narrow"], [0.9, 0.9])
    assert ranked is not None
    ranking, plain, fit = ranked
    # The same similarity to both counts for more toward the broad entry: in the ranking, by
    # a share of the difference in spread; in the fit, by all of it, about the mean spread
    assert ranking["broad"] / ranking["narrow"] == pytest.approx(
        plain["broad"]
        / plain["narrow"]
        * np.exp(WEIGHT * SHARE * (spread["narrow"] - spread["broad"])),
        rel=1e-3,
    )
    middle = sum(spread.values()) / 3
    assert fit["broad"] == pytest.approx(0.9 + middle - spread["broad"], abs=1e-6)
    assert fit["narrow"] == pytest.approx(0.9 + middle - spread["narrow"], abs=1e-6)
    stored = FaqHead.from_bytes(trained.to_bytes())
    np.testing.assert_allclose(stored.spread, trained.spread)


def test_an_entry_of_few_questions_is_not_taken_for_a_broad_one() -> None:
    # Entries whose questions scatter alike around their own direction, 20 of 3 questions and 20
    # of 40: how alike a question is to the centroid of the others depends on how many others
    # there are (a centroid of two is far noisier than one of 39), the spread does not.
    rng = np.random.default_rng(11)
    sizes = [3] * 20 + [40] * 20
    entries = {
        f"e{k}": _unit(np.eye(DIM)[k % DIM] + 0.4 * rng.standard_normal((size, DIM)))
        for k, size in enumerate(sizes)
    }

    def to_centroid_of_others(rows: np.ndarray) -> float:
        others = _unit(rows.sum(axis=0)[None, :] - rows)
        return float((rows * others).sum(axis=1).mean())

    old = np.array([to_centroid_of_others(rows) for rows in entries.values()])
    assert old[20:].mean() - old[:20].mean() > 0.08
    spread = head_training.spread(entries, list(entries))
    assert abs(float(spread[20:].mean() - spread[:20].mean())) < 0.03
    pairs = entries["e0"] @ entries["e0"].T
    assert spread[0] == pytest.approx(np.sqrt(pairs[np.triu_indices(3, 1)].mean()), abs=1e-6)


def test_an_entry_whose_questions_share_nothing_has_no_spread() -> None:
    # Questions no more alike than questions of different entries (an embedder that sees
    # nothing in common between an entry's paraphrases): taking that as a broad entry would
    # raise every question's fit toward it, so its spread is unknown (the mean at question time)
    def entries(shared: float) -> dict[str, np.ndarray]:
        scattered = _unit(np.eye(DIM)[3:7] + shared)
        return {"card": QUESTIONS["card"], "refund": QUESTIONS["refund"], "scattered": scattered}

    def pairs_within_and_across(kb: dict[str, np.ndarray]) -> tuple[float, float]:
        rows = np.vstack(list(kb.values()))
        owner = np.concatenate([[k] * len(v) for k, v in enumerate(kb.values())])
        similar = rows @ rows.T
        different = owner[:, None] != owner[None, :]
        own = (owner[:, None] == 2) & (owner[None, :] == 2) & ~np.eye(len(rows), dtype=bool)
        return float(similar[own].mean()), float(similar[different].mean())

    below, above = entries(0.3), entries(0.5)
    within, across = pairs_within_and_across(below)
    assert 0 < within < across  # alike, but less than questions of different entries are
    spread = head_training.spread(below, list(below))
    assert spread[0] > 0.9
    assert spread[1] > 0.9
    assert spread[2] == pytest.approx((spread[0] + spread[1]) / 2)  # unknown: the mean
    within, across = pairs_within_and_across(above)
    assert within > across
    assert head_training.spread(above, list(above))[2] == pytest.approx(np.sqrt(within), abs=1e-6)
    trained = head_training.train(below)
    assert trained is not None
    ranked = trained.rank(_unit(np.ones(DIM)), ["card", "scattered"], [0.1, 0.1])
    assert ranked is not None
    assert ranked.fit["scattered"] == pytest.approx(0.1, abs=1e-6)
    assert ranked.fit["card"] == pytest.approx(0.1 + (spread[1] - spread[0]) / 2, abs=1e-6)


@pytest.mark.parametrize(
    "earlier",
    [
        (),  # stored before heads kept a spread
        ("spread",),  # the key an earlier release stored another measure under
    ],
)
def test_a_head_stored_without_the_spread_is_not_read_and_is_outdated(
    earlier: tuple[str, ...],
) -> None:
    index = _indexed()
    trained = head_training.train(index.faq_questions("default"))
    assert trained is not None
    assert FaqHead.from_bytes(_stored(trained, spread_pairs=trained.spread)).ids == trained.ids
    body = _stored(trained, **dict.fromkeys(earlier, trained.spread))

    with pytest.raises(ValueError, match="without the spread"):
        FaqHead.from_bytes(body)
    assert head_training.outdated(body)
    # Until it is retrained, the KB is ranked by similarity
    index.save_head("default", body)
    _assert_ranked_by_similarity(index)


def test_an_entry_of_one_question_is_neither_favoured_nor_held_back() -> None:
    questions = {
        "card": QUESTIONS["card"],
        "refund": QUESTIONS["refund"],
        "single": QUESTIONS["tracking"][:1],
    }
    trained = head_training.train(questions)
    assert trained is not None
    spread = dict(zip(trained.ids, trained.spread.tolist(), strict=True))
    # It has no others to be like: unknown, the mean of the others (0 would raise its fit and
    # ranking far above the rest)
    assert spread["single"] == pytest.approx((spread["card"] + spread["refund"]) / 2)
    question = QUESTIONS["tracking"][1]
    ranked = trained.rank(question, ["card", "single"], [0.7, 0.7])
    assert ranked is not None
    typical = (spread["card"] + spread["refund"]) / 2
    assert ranked.fit["single"] == pytest.approx(0.7, abs=1e-6)
    assert ranked.fit["card"] == pytest.approx(0.7 - (spread["card"] - typical), abs=1e-6)
    assert ranked.order["single"] / ranked.order["card"] == pytest.approx(
        ranked.probability["single"]
        / ranked.probability["card"]
        * np.exp(WEIGHT * SHARE * (spread["card"] - typical)),
        rel=1e-3,
    )


def test_the_lexical_score_adds_to_the_ranking_logits() -> None:
    trained = head_training.train(QUESTIONS)
    assert trained is not None
    question = QUESTIONS["card"][0]
    among = ["card", "refund"]
    plain = trained.rank(question, among, [0.5, 0.5])
    assert plain is not None
    for ranking in (Ranking(), Ranking(lexical_logits=3.0)):
        lexical = trained.rank(question, among, [0.5, 0.5], [0.0, 1.0], ranking)
        assert lexical is not None
        without, with_bm25 = plain.order, lexical.order
        assert with_bm25["refund"] / with_bm25["card"] == pytest.approx(
            without["refund"] / without["card"] * np.exp(ranking.lexical_logits), rel=1e-3
        )
        assert lexical.probability == plain.probability  # the head's own view is not moved


def test_an_faq_entry_answers_when_both_its_similarity_and_its_probability_are_enough() -> None:
    index = _indexed()
    trained = head_training.train(index.faq_questions("default"))
    assert trained is not None
    index.save_head("default", trained.to_bytes())
    unseen = _unit(CENTRES[2] + 0.1 * np.random.default_rng(4).standard_normal(DIM))
    embedder = _Fixed({"q": unseen})

    def decide(fit: float, head_threshold: float) -> tuple[str, SearchHit]:
        # No similarity is enough: with a head, the decision reads the fit instead
        thresholds = Thresholds(fit=fit, head=head_threshold, similarity=1.01, passage=1.0)
        retriever = Retriever(embedder=embedder, index=index, thresholds=thresholds)  # type: ignore[arg-type]
        decision = retriever.decide("q", language=None, tenant="default")
        best = retriever.search("q", language=None, tenant="default")[0]
        assert best.chunk.id == "tracking"
        return decision.kind, best

    kind, best = decide(0.0, 0.5)
    assert kind == "faq"
    assert best.probability is not None
    assert best.probability > 0.5
    # Near enough but not told apart from its neighbours with enough certainty
    assert decide(0.0, min(1.0, best.probability + 0.01))[0] == "decline"
    # Told apart, but the question is not near enough the entry: a head always has a favourite.
    # Near is the fit: the similarity relative to how alike the entry's own questions are.
    assert best.fit is not None
    assert best.fit != pytest.approx(best.dense, abs=1e-4)
    assert decide(best.fit, 0.0)[0] == "faq"
    assert decide(best.fit + 0.001, 0.0)[0] == "decline"


def test_a_head_that_does_not_know_a_candidate_is_not_used() -> None:
    index = _indexed()
    trained = head_training.train({k: v for k, v in QUESTIONS.items() if k != "tracking"})
    assert trained is not None
    index.save_head("default", trained.to_bytes())
    _assert_ranked_by_similarity(index)


def _assert_ranked_by_similarity(index: object) -> None:
    """A tracking question, asked of `index`, is ranked without the head's probabilities."""
    embedder = _Fixed({"q": QUESTIONS["tracking"][0]})
    retriever = Retriever(embedder=embedder, index=index, thresholds=THRESHOLDS)  # type: ignore[arg-type]

    hits = retriever.search("q", language=None, tenant="default")

    assert hits[0].chunk.id == "tracking"
    assert all(hit.probability is None for hit in hits)


def test_a_head_trained_with_another_embedder_is_ignored_and_a_new_head_is_read() -> None:
    index = _indexed()
    ones = np.ones((2, 4), dtype=np.float32)
    other = head_training.train({"a": ones, "b": -ones})
    assert other is not None
    index.save_head("default", other.to_bytes())
    embedder = _Fixed({"q": QUESTIONS["card"][0]})
    now = [100.0]
    retriever = Retriever(
        embedder=embedder,  # type: ignore[arg-type]
        index=index,
        thresholds=THRESHOLDS,
        clock=lambda: now[0],
    )
    assert retriever.head("default") is None

    trained = head_training.train(index.faq_questions("default"))
    assert trained is not None
    index.save_head("default", trained.to_bytes())  # moves the version on
    now[0] += 29.0
    assert retriever.head("default") is None  # the version is asked at most every 30 s
    now[0] += 1.0
    assert retriever.head("default") is not None
    assert retriever.search("q", language=None, tenant="default")[0].probability is not None


class _Flaky:
    """An index whose head cannot be had: unreachable, or not a head at all."""

    def __init__(self, index: EmbeddedIndex, failure: Exception | None, body: bytes) -> None:
        self.index, self.failure, self.body = index, failure, body

    @property
    def version(self) -> str:
        return self.index.version

    def load_head(self, tenant: str) -> bytes:
        if self.failure is not None:
            raise self.failure
        return self.body

    def search(self, query: object) -> object:
        return self.index.search(query)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("failure", "body"),
    [(DependencyUnavailable("meta index down"), b""), (None, b"PK\x03\x04 not a head")],
)
def test_a_head_that_cannot_be_read_leaves_the_ranking_to_similarity(
    failure: Exception | None, body: bytes
) -> None:
    _assert_ranked_by_similarity(_Flaky(_indexed(), failure, body))


def test_the_head_reranks_only_faq_entries_and_keeps_the_limit() -> None:
    index = _indexed()
    passage = Chunk(id="guide#1", kind="passage", lang="en", title="Guide", text="x", keys=())
    index.upsert([passage], [_unit(np.ones((1, DIM)))])
    trained = head_training.train(index.faq_questions("default"))
    assert trained is not None
    index.save_head("default", trained.to_bytes())
    embedder = _Fixed({"q": _unit(np.ones(DIM))})
    retriever = Retriever(embedder=embedder, index=index, thresholds=THRESHOLDS)  # type: ignore[arg-type]

    plain = Retriever(embedder=embedder, index=index, thresholds=THRESHOLDS, use_head=False)  # type: ignore[arg-type]
    before = plain.search("q", language=None, tenant="default", limit=10)
    after = retriever.search("q", language=None, tenant="default", limit=10)
    top_two = retriever.search("q", language=None, tenant="default", limit=2)

    # The passage keeps its place; the FAQ entries are re-ordered among their own places
    assert [h.chunk.kind for h in after] == [h.chunk.kind for h in before]
    assert after[0].chunk.id == "guide#1"
    assert all(h.probability is not None for h in after if h.chunk.kind == "faq")
    assert sorted(h.chunk.id for h in after) == sorted(h.chunk.id for h in before)
    assert top_two == after[:2]


def test_a_kb_over_the_training_budget_gets_no_head_and_the_ingest_says_why() -> None:
    from kb_ingest.pipeline import retrain_head

    index = _indexed()
    assert retrain_head(index, tenant="default") == (3, "")
    assert index.load_head("default") is not None

    over = Training(max_nearest_cells=17)  # 3 entries x 18 questions = 54
    classes, why = retrain_head(index, tenant="default", training=over)

    assert classes == 0
    assert "54 question-entry pairs are over the training budget (17)" in why
    assert index.load_head("default") is None  # the old head is not left to rank a new KB
    assert retrain_head(EmbeddedIndex(":memory:"), tenant="default") == (0, "")


def test_a_kb_over_the_full_softmax_budget_is_trained_on_each_questions_nearest_entries() -> None:
    nearest = _nearest_training(2)  # its own entry and the nearest other

    first = head_training.train(QUESTIONS, training=nearest)
    second = head_training.train(QUESTIONS, training=nearest)

    assert first is not None
    assert second is not None
    assert first.to_bytes() == second.to_bytes()  # still deterministic
    assert first.weights.shape == (DIM, 3)
    assert first.weights.dtype == first.bias.dtype == np.float32
    _own_probabilities(first, list(first.ids))


def test_a_head_trained_on_the_nearest_entries_is_as_sure_as_the_full_one() -> None:
    # The built-in head threshold is calibrated on full-softmax heads: a head trained on each
    # question's nearest entries (a KB over the budget) must be about as sure as one of those,
    # of its right answers (or that threshold declines them) and of questions the KB does not
    # cover (or it answers them). On the sample KB with the hashing embedder, its mean
    # probability of its right answers / of uncovered questions' first entry: full softmax
    # 0.681 / 0.455; nearest, with the full softmax's L2 (1e-4) 0.651 / 0.387, with its own
    # (`Training.nearest_l2`, 1e-5) 0.733 / 0.467, with none 0.741 / 0.526 (and 5 fewer ranked
    # first).
    import itertools

    from kb_ingest import SAMPLE_KB, SAMPLE_KB_PATHS
    from kb_ingest.evaluate import load_queries
    from kb_ingest.pipeline import ingest
    from kefu.adapters.embedders import HashingEmbedder
    from kefu.decision import BUILT_IN

    embedder, index = HashingEmbedder(), EmbeddedIndex(":memory:")
    ingest(list(SAMPLE_KB_PATHS), index=index, embedder=embedder, train_head=False)
    questions = index.faq_questions("default")
    languages = {i: c.lang for i, c in index.catalog("default").items() if c.kind == "faq"}
    queries = load_queries(SAMPLE_KB / "eval" / "queries.jsonl")
    versions = itertools.count(10**9)

    def sureness(trained: FaqHead | None) -> tuple[int, float, float]:
        """How many covered questions it ranks right first, its mean probability of those, and
        its mean probability of uncovered questions' first entry."""
        assert trained is not None
        assert index.save_head("default", trained.to_bytes(), trained_at=next(versions))
        retriever = Retriever(embedder=embedder, index=index, thresholds=BUILT_IN[embedder.name])
        right, uncovered = [], []
        for query in queries:
            hits = retriever.search(query.query, language=None, tenant="default")
            first = next((hit for hit in hits if hit.chunk.kind == "faq"), None)
            if first is None:  # only passages among the candidates
                continue
            assert first.probability is not None
            if query.expected_id is None:
                uncovered.append(first.probability)
            elif first.chunk.id == query.expected_id:
                right.append(first.probability)
        return len(right), float(np.mean(right)), float(np.mean(uncovered))

    full_right, full_sure, full_uncovered = sureness(head_training.train(questions, languages))
    over = Training(max_full_cells=0)  # as a KB over the full-softmax budget
    right, sure, uncovered = sureness(head_training.train(questions, languages, over))

    assert full_right > 90
    assert right >= full_right - 2
    assert sure >= full_sure - 0.01
    assert uncovered <= full_uncovered + 0.03


def test_a_large_bilingual_kb_is_trained_against_entries_of_the_questions_language() -> None:
    # Each entry has a twin in the other language whose questions a multilingual encoder puts
    # next to its own; a question's nearest other entry is then its twin, which the index's
    # language filter keeps out of its candidates at question time.
    nearest = _nearest_training(2)  # its own entry and the nearest other
    twins = {
        f"{e}-zh": _unit(q + 0.01 * RNG.standard_normal(q.shape)) for e, q in QUESTIONS.items()
    }
    bilingual = {**{f"{e}-en": q for e, q in QUESTIONS.items()}, **twins}
    languages = {entry: entry[-2:] for entry in bilingual}
    english = [f"{e}-en" for e in QUESTIONS]

    within = min(_own_probabilities(head_training.train(bilingual, languages, nearest), english))
    across = min(
        _own_probabilities(head_training.train(bilingual, training=nearest), english, first=False)
    )

    assert within > 0.5
    assert within > across + 0.2


def test_a_language_with_fewer_entries_than_the_nearest_count_trains_on_what_it_has() -> None:
    nearest = _nearest_training(4)  # more than English has, and Chinese
    questions = {**QUESTIONS, "card-zh": _unit(QUESTIONS["card"] + 0.01)}
    languages = {entry: "zh" if entry.endswith("-zh") else "en" for entry in questions}

    _own_probabilities(head_training.train(questions, languages, nearest), list(QUESTIONS))


def test_retraining_gives_a_large_kb_its_entries_languages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kb_ingest import pipeline
    from kb_ingest.pipeline import retrain_head

    index = _indexed()
    twin = replace(_faq("card-zh", 2), lang="zh")
    index.upsert([twin], [np.vstack([_unit(np.ones(DIM)), QUESTIONS["card"][:2]])])
    given: list[dict[str, str] | None] = []
    real_train = head_training.train

    def recording_train(questions: Any, languages: Any = None, *rest: Any) -> FaqHead | None:
        given.append(languages)
        return real_train(questions, languages, *rest)

    monkeypatch.setattr(pipeline, "train", recording_train)
    retrain_head(index, tenant="default")  # within the full-softmax budget: every entry
    retrain_head(index, tenant="default", training=Training(max_full_cells=0))

    assert given == [
        None,
        {"card": "en", "refund": "en", "tracking": "en", "card-zh": "zh"},
    ]


def test_a_kb_without_faq_entries_is_not_given_a_new_version_by_every_ingest(
    mini_kb_paths: list[Path],
) -> None:
    from kb_ingest.pipeline import ingest
    from kefu.adapters.embedders import HashingEmbedder

    index = EmbeddedIndex(":memory:")
    policy = [path for path in mini_kb_paths if path.suffix == ".md"]
    first = ingest(policy, index=index, embedder=HashingEmbedder())
    again = ingest(policy, index=index, embedder=HashingEmbedder())
    assert (first.head_classes, first.head_skipped) == (0, "")
    assert again.version == first.version


def test_a_head_the_index_refuses_is_no_head_and_the_old_one_goes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kb_ingest.pipeline import retrain_head
    from kefu.errors import IndexWriteRejected

    index = _indexed()
    assert retrain_head(index, tenant="default") == (3, "")
    real_save = index.save_head

    def refuse_large(tenant: str, body: bytes | None, *, trained_at: int = 0) -> bool:
        if body is not None:
            raise IndexWriteRejected("the FAQ head is too large")
        return real_save(tenant, body, trained_at=trained_at)

    monkeypatch.setattr(index, "save_head", refuse_large)
    classes, why = retrain_head(index, tenant="default")

    assert classes == 0
    assert "the index refused it (the FAQ head is too large)" in why
    assert index.load_head("default") is None


def test_an_ingest_whose_head_cannot_be_trained_still_reports_what_it_wrote(
    mini_kb_paths: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kb_ingest.pipeline import ingest
    from kefu.adapters.embedders import HashingEmbedder

    index = EmbeddedIndex(":memory:")

    def down(tenant: str) -> object:
        raise DependencyUnavailable("index down")

    monkeypatch.setattr(index, "faq_questions", down)
    report = ingest(mini_kb_paths, index=index, embedder=HashingEmbedder())

    assert report.chunks_written == 8
    assert "FAQ head not trained: training failed (index down)" in report.summary()


def test_an_unchanged_kb_whose_stored_head_is_outdated_is_trained_again(
    mini_kb_paths: list[Path],
) -> None:
    from kb_ingest.pipeline import ingest
    from kefu.adapters.embedders import HashingEmbedder

    index = EmbeddedIndex(":memory:")
    embedder = HashingEmbedder()
    ingest(mini_kb_paths, index=index, embedder=embedder)
    current = index.load_head("default")
    assert current is not None
    assert not head_training.outdated(current)
    assert ingest(mini_kb_paths, index=index, embedder=embedder).head_classes == 0  # kept

    trained = FaqHead.from_bytes(current)
    assert trained.recipe == Training().recipes()["full"]
    earlier = _stored(trained)  # stored before heads kept a spread
    unsaid = replace(trained, recipe="")  # stored before heads said how they were trained
    otherwise = replace(trained, recipe=trained.recipe.replace("L2", "L2 0.001, was"))
    for stored in (earlier, unsaid.to_bytes(), otherwise.to_bytes(), b"not a head"):
        index.save_head("default", stored, trained_at=int(index.version))
        assert head_training.outdated(index.load_head("default"))
        report = ingest(mini_kb_paths, index=index, embedder=embedder)
        assert report.chunks_written == 0
        assert report.head_classes == 6
        assert not head_training.outdated(index.load_head("default"))


def test_a_head_trained_with_an_earlier_releases_settings_is_outdated() -> None:
    # As this release trains a KB over the full-softmax budget (the budget is not how)
    current = head_training.train(QUESTIONS, training=Training(max_full_cells=0))
    assert current is not None
    assert current.recipe == Training().recipes()["nearest"]
    assert FaqHead.from_bytes(current.to_bytes()).recipe == current.recipe
    assert not head_training.outdated(current.to_bytes())

    # As the release before the nearest entries' own L2 trained it
    before = Training(max_full_cells=0, nearest_l2=1e-4)
    earlier = head_training.train(QUESTIONS, training=before)

    assert earlier is not None
    assert head_training.outdated(earlier.to_bytes())
    assert not head_training.outdated(earlier.to_bytes(), before)  # as that release saw it
    assert not head_training.outdated(current.to_bytes())


def test_of_two_concurrent_trainings_the_one_that_saw_the_newer_kb_keeps_its_head() -> None:
    from kb_ingest.pipeline import retrain_head

    index = _indexed()
    assert retrain_head(index, tenant="default") == (3, "")
    newer = index.load_head("default")
    # An ingest that read the KB before that head was stored (an older version) ends later
    stale = head_training.train({k: v for k, v in QUESTIONS.items() if k != "tracking"})
    assert stale is not None
    assert not index.save_head("default", stale.to_bytes(), trained_at=0)
    assert index.load_head("default") == newer
