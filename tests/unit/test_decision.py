"""The answer-or-decline decision: a pure function of the ranked hits and the thresholds, which
one function resolves from the settings."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kefu.decision import (
    BUILT_IN,
    UNCALIBRATED,
    Thresholds,
    answers,
    confidence,
    decide,
    resolve_thresholds,
)
from kefu.errors import ConfigurationError
from kefu.models import SearchHit
from kefu.settings import Settings
from tests.search_hits import hit

THRESHOLDS = Thresholds(fit=0.8, head=0.6, similarity=0.8, passage=0.7)
TITAN = "titan-embed-text-v2-1024"  # an embedder without built-in thresholds


# -- deciding ---------------------------------------------------------------------------------
def test_a_confident_faq_match_answers_directly() -> None:
    decision = decide([hit("faq-1", "faq", 0.85), hit("doc#1", "passage", 0.9)], THRESHOLDS)
    assert decision.kind == "faq"
    assert decision.best is not None
    assert decision.best.chunk.id == "faq-1"
    assert [h.chunk.id for h in decision.hits] == ["faq-1", "doc#1"]  # its passages beside it
    assert decision.confidence == 0.85


def test_passages_answer_when_no_faq_is_close_enough() -> None:
    decision = decide([hit("doc#1", "passage", 0.75), hit("faq-1", "faq", 0.79)], THRESHOLDS)
    assert decision.kind == "passages"
    assert [h.chunk.id for h in decision.hits] == ["doc#1"]
    assert decision.confidence == 0.75


def test_nothing_close_enough_is_declined() -> None:
    weak = [hit("faq-1", "faq", 0.6), hit("doc#1", "passage", 0.5)]
    assert decide(weak, THRESHOLDS).kind == "decline"
    decision = decide([], THRESHOLDS)
    assert decision.kind == "decline"
    assert decision.best is None
    assert decision.confidence == 0.0


def test_with_a_head_an_faq_entry_needs_both_its_fit_and_the_heads_probability() -> None:
    thresholds = Thresholds(fit=0.8, head=0.6, similarity=0.9, passage=0.99)
    # Ranked by the head: its fit and probability are read, not its similarity (below 0.9)
    fitted = replace(hit("faq-1", "faq", 0.5), fit=0.85, probability=0.7)

    assert answers(fitted, thresholds)
    assert decide([fitted], thresholds).kind == "faq"
    assert decide([fitted], thresholds).confidence == 0.7  # the head's probability
    assert answers(replace(fitted, fit=0.8, probability=0.6), thresholds)  # both reached
    # Near, but not told apart from its neighbours with enough certainty
    assert not answers(replace(fitted, probability=0.59), thresholds)
    # Told apart, but not near enough: a head always has a favourite
    assert not answers(replace(fitted, fit=0.79), thresholds)
    assert decide([replace(fitted, fit=0.79)], thresholds).kind == "decline"
    # However similar it is
    assert not answers(replace(fitted, dense=1.0, fit=0.79), thresholds)


def test_without_a_head_an_faq_entry_needs_its_similarity() -> None:
    thresholds = Thresholds(fit=0.8, head=0.6, similarity=0.9, passage=0.99)
    bare = hit("faq-1", "faq", 0.85)  # no head ranked it: no fit, no probability

    assert not answers(bare, thresholds)  # 0.85 < 0.9, though above the fit threshold
    assert decide([bare], thresholds).kind == "decline"
    assert answers(replace(bare, dense=0.9), thresholds)
    assert decide([replace(bare, dense=0.9)], thresholds).kind == "faq"
    # The head threshold does not apply without a head's probability
    assert answers(replace(bare, dense=0.9), replace(thresholds, head=1.0))


def test_an_out_of_scope_example_nearer_than_any_faq_question_is_declined() -> None:
    decision = decide(
        [hit("faq-1", "faq", 0.9), hit("oos-weather", "out_of_scope", 0.92)], THRESHOLDS
    )
    assert decision.kind == "decline"
    assert decision.hits == ()
    assert decision.confidence == 0.9


def test_an_out_of_scope_example_nearer_than_every_passage_declines_without_an_faq() -> None:
    decision = decide([hit("doc#1", "passage", 0.9), hit("oos", "out_of_scope", 0.95)], THRESHOLDS)
    assert decision.kind == "decline"
    assert decision.confidence == 0.0


def test_an_faq_question_nearer_than_every_out_of_scope_example_answers() -> None:
    decision = decide(
        [hit("faq-1", "faq", 0.9), hit("oos-weather", "out_of_scope", 0.85)], THRESHOLDS
    )
    assert decision.kind == "faq"
    assert decision.hits[0].chunk.id == "faq-1"


def test_out_of_scope_is_weighed_against_the_nearest_key_not_the_blended_score() -> None:
    chunk = hit("faq-1", "faq", 0.0).chunk
    blended_low = SearchHit(chunk=chunk, score=0.86, dense=0.86, lexical=0.0, nearest=0.95)
    decision = decide([hit("oos", "out_of_scope", 0.9), blended_low], THRESHOLDS)
    assert decision.kind == "faq"


def test_the_confidence_is_the_heads_probability_else_the_similarity_within_0_and_1() -> None:
    bare = hit("faq-1", "faq", 0.87654)
    assert confidence(bare) == 0.8765
    assert confidence(replace(bare, fit=0.5, probability=0.3)) == 0.3
    assert confidence(replace(bare, dense=1.2)) == 1.0
    assert confidence(replace(bare, dense=-0.1)) == 0.0


# -- resolving the thresholds -----------------------------------------------------------------
@pytest.mark.parametrize("embedder", sorted(BUILT_IN))
def test_each_calibrated_embedder_has_its_built_in_thresholds(embedder: str) -> None:
    assert resolve_thresholds(Settings(), embedder) == BUILT_IN[embedder]
    # A fallback is only for an embedder without them
    assert resolve_thresholds(Settings(), embedder, fallback=UNCALIBRATED) == BUILT_IN[embedder]


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("head_threshold", "head"),
        ("passage_threshold", "passage"),
        ("similarity_threshold", "similarity"),
    ],
)
def test_the_settings_override_each_built_in_threshold(setting: str, field: str) -> None:
    built_in = BUILT_IN["hashing-v1"]
    settings = Settings(**{setting: 0.42})  # type: ignore[arg-type]
    assert resolve_thresholds(settings, "hashing-v1") == replace(built_in, **{field: 0.42})


def test_a_faq_threshold_given_alone_holds_for_the_similarity_too() -> None:
    # An operator who calibrated the FAQ threshold alone gets it for both, as before
    built_in = BUILT_IN["hashing-v1"]
    alone = resolve_thresholds(Settings(faq_threshold=0.5), "hashing-v1")
    assert alone == replace(built_in, fit=0.5, similarity=0.5)
    both = resolve_thresholds(Settings(faq_threshold=0.5, similarity_threshold=0.6), "hashing-v1")
    assert both == replace(built_in, fit=0.5, similarity=0.6)


def test_an_embedder_without_built_in_thresholds_must_be_given_them() -> None:
    with pytest.raises(ConfigurationError, match=TITAN) as raised:
        resolve_thresholds(Settings(), TITAN)
    for name in ("KEFU_FAQ_THRESHOLD", "KEFU_HEAD_THRESHOLD", "KEFU_PASSAGE_THRESHOLD"):
        assert name in str(raised.value)
    with pytest.raises(ConfigurationError, match="KEFU_HEAD_THRESHOLD"):
        resolve_thresholds(Settings(faq_threshold=0.7, passage_threshold=0.6), TITAN)
    given = Settings(faq_threshold=0.7, passage_threshold=0.6, head_threshold=0.5)
    assert resolve_thresholds(given, TITAN) == Thresholds(
        fit=0.7, head=0.5, similarity=0.7, passage=0.6
    )
    with_similarity = given.model_copy(update={"similarity_threshold": 0.8})
    assert resolve_thresholds(with_similarity, TITAN) == Thresholds(
        fit=0.7, head=0.5, similarity=0.8, passage=0.6
    )


def test_the_variables_the_error_names_are_the_ones_the_settings_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in (("FAQ", "0.7"), ("HEAD", "0.5"), ("PASSAGE", "0.6")):
        monkeypatch.setenv(f"KEFU_{name}_THRESHOLD", value)
    assert resolve_thresholds(Settings(), TITAN) == Thresholds(
        fit=0.7, head=0.5, similarity=0.7, passage=0.6
    )


def test_a_fallback_fills_what_the_settings_do_not_give() -> None:
    assert resolve_thresholds(Settings(), TITAN, fallback=UNCALIBRATED) == UNCALIBRATED
    given = Settings(faq_threshold=0.5, passage_threshold=0.6)
    assert resolve_thresholds(given, TITAN, fallback=UNCALIBRATED) == Thresholds(
        fit=0.5, head=UNCALIBRATED.head, similarity=0.5, passage=0.6
    )
