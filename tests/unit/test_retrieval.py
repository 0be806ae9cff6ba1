from dataclasses import replace as replace_
from typing import Any

from kefu.models import Chunk, SearchHit
from kefu.retrieval import Retriever, Thresholds


class _Unused:
    name = "unused"
    dim = 0


def hit(chunk_id: str, kind: str, dense: float) -> SearchHit:
    chunk = Chunk(
        id=chunk_id,
        kind=kind,
        lang="en",
        title=chunk_id,
        text="",
        keys=(),  # type: ignore[arg-type]
    )
    return SearchHit(chunk=chunk, score=dense, dense=dense, lexical=0.0, nearest=dense)


RETRIEVER = Retriever(
    embedder=_Unused(),  # type: ignore[arg-type]
    index=_Unused(),  # type: ignore[arg-type]
    thresholds=Thresholds(faq=0.8, passage=0.7, head=0.6),
)


def test_a_confident_faq_match_answers_directly() -> None:
    decision = RETRIEVER.decide_on([hit("faq-1", "faq", 0.85), hit("doc#1", "passage", 0.9)])
    assert decision.kind == "faq"
    assert decision.hits[0].chunk.id == "faq-1"
    assert decision.confidence == 0.85


def test_passages_answer_when_no_faq_is_close_enough() -> None:
    decision = RETRIEVER.decide_on([hit("doc#1", "passage", 0.75), hit("faq-1", "faq", 0.79)])
    assert decision.kind == "passages"
    assert [h.chunk.id for h in decision.hits] == ["doc#1"]


def test_nothing_close_enough_is_declined() -> None:
    assert RETRIEVER.decide_on([hit("faq-1", "faq", 0.6), hit("doc#1", "passage", 0.5)]).kind == (
        "decline"
    )
    empty: list[Any] = []
    decision = RETRIEVER.decide_on(empty)
    assert decision.kind == "decline"
    assert decision.confidence == 0.0


def test_a_fit_is_held_to_the_faq_threshold_and_a_bare_similarity_to_its_own() -> None:
    retriever = Retriever(
        embedder=_Unused(),  # type: ignore[arg-type]
        index=_Unused(),  # type: ignore[arg-type]
        thresholds=Thresholds(faq=0.8, passage=0.99, head=0.6, similarity=0.9),
    )
    bare = hit("faq-1", "faq", 0.85)  # no head: its similarity alone
    fitted = replace_(bare, dense=0.95, fit=0.85, probability=0.7)

    assert retriever.decide_on([bare]).kind == "decline"  # 0.85 < 0.9
    assert retriever.decide_on([replace_(bare, dense=0.9)]).kind == "faq"
    assert retriever.decide_on([fitted]).kind == "faq"  # 0.85 >= 0.8
    assert retriever.decide_on([replace_(fitted, fit=0.79)]).kind == "decline"
    # A head stored without the spread gives a probability but no fit: the similarity's
    assert retriever.decide_on([replace_(bare, probability=0.7)]).kind == "decline"
    # Without a similarity threshold, the FAQ threshold holds for both
    assert RETRIEVER.decide_on([bare]).kind == "faq"


def test_an_out_of_scope_example_nearer_than_any_faq_question_is_declined() -> None:
    decision = RETRIEVER.decide_on(
        [hit("faq-1", "faq", 0.9), hit("oos-weather", "out_of_scope", 0.92)]
    )
    assert decision.kind == "decline"
    assert decision.hits == ()


def test_an_faq_question_nearer_than_every_out_of_scope_example_answers() -> None:
    decision = RETRIEVER.decide_on(
        [hit("faq-1", "faq", 0.9), hit("oos-weather", "out_of_scope", 0.85)]
    )
    assert decision.kind == "faq"
    assert decision.hits[0].chunk.id == "faq-1"


def test_out_of_scope_is_weighed_against_the_nearest_key_not_the_blended_score() -> None:
    chunk = hit("faq-1", "faq", 0.0).chunk
    blended_low = SearchHit(chunk=chunk, score=0.86, dense=0.86, lexical=0.0, nearest=0.95)
    decision = RETRIEVER.decide_on([hit("oos", "out_of_scope", 0.9), blended_low])
    assert decision.kind == "faq"


def test_an_embedder_without_calibrated_thresholds_must_be_given_them() -> None:
    import pytest

    from kefu.bootstrap import build_retriever
    from kefu.errors import ConfigurationError
    from kefu.settings import Settings

    class _Titan:
        name = "titan-embed-text-v2-1024"
        dim = 1024

    with pytest.raises(ConfigurationError, match="KEFU_FAQ_THRESHOLD"):
        build_retriever(Settings(), embedder=_Titan(), index=_Unused())  # type: ignore[arg-type]
    partly = Settings(faq_threshold=0.7, passage_threshold=0.6)
    with pytest.raises(ConfigurationError, match="KEFU_HEAD_THRESHOLD"):
        build_retriever(partly, embedder=_Titan(), index=_Unused())  # type: ignore[arg-type]
    given = Settings(faq_threshold=0.7, passage_threshold=0.6, head_threshold=0.5)
    retriever = build_retriever(given, embedder=_Titan(), index=_Unused())  # type: ignore[arg-type]
    assert retriever.thresholds == Thresholds(faq=0.7, passage=0.6, head=0.5)
    with_similarity = given.model_copy(update={"similarity_threshold": 0.8})
    retriever = build_retriever(with_similarity, embedder=_Titan(), index=_Unused())  # type: ignore[arg-type]
    assert retriever.thresholds == Thresholds(faq=0.7, passage=0.6, head=0.5, similarity=0.8)


def test_a_built_in_similarity_threshold_yields_to_a_faq_threshold_given_alone() -> None:
    from kefu.adapters.embedders import HashingEmbedder
    from kefu.bootstrap import build_retriever
    from kefu.retrieval import DEFAULT_THRESHOLDS
    from kefu.settings import Settings

    built_in = DEFAULT_THRESHOLDS[HashingEmbedder().name]
    assert built_in.similarity is not None

    def thresholds(**given: float) -> Thresholds:
        settings = Settings(**given)  # type: ignore[arg-type]
        return build_retriever(settings, embedder=HashingEmbedder(), index=_Unused()).thresholds  # type: ignore[arg-type]

    assert thresholds() == built_in
    # An operator who calibrated the FAQ threshold alone gets it for both, as before
    assert thresholds(faq_threshold=0.5) == replace_(built_in, faq=0.5, similarity=None)
    assert thresholds(faq_threshold=0.5, similarity_threshold=0.6).similarity == 0.6
    assert thresholds(similarity_threshold=0.6) == replace_(built_in, similarity=0.6)
