"""Chunking: passages within a token budget, cut at sentence ends, overlapping, covering all."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kb_ingest.chunking import (
    MAX_PASSAGE_TOKENS,
    OVERLAP_TOKENS,
    passage_spans,
    split_long,
    split_markdown,
)
from kefu.text import tokenize


def _tokens(text: str) -> int:
    return len(tokenize(text))


def test_chinese_without_spaces_is_cut_at_full_stops_within_the_token_budget() -> None:
    # Given a Chinese policy of 60 sentences, 18 bigram tokens each, and no spaces at all
    sentence = "退货商品需保持原包装完整并附上全部配件。"
    text = sentence * 60

    # When it is split with a budget of 100 tokens and 20 of overlap
    spans = passage_spans(text, limit=100, overlap=20)
    pieces = [text[start:end] for start, end in spans]

    # Then every piece is within the budget and all but the last end at a full stop
    assert len(pieces) > 5
    assert all(_tokens(piece) <= 100 for piece in pieces)
    assert all(piece.endswith("。") for piece in pieces[:-1])
    # And each piece begins with the previous one's tail: up to 20 tokens, as many as fit
    for (_, end), (next_start, _) in itertools.pairwise(spans):
        assert 18 <= _tokens(text[next_start:end]) <= 20
    assert split_long(text, limit=100, overlap=20) == pieces


def test_english_is_cut_after_a_full_stop_not_inside_a_number_or_a_word() -> None:
    text = " ".join(
        f"Version {n}.5 of the warranty terms applies to orders placed in month {n}."
        for n in range(40)
    )
    pieces = split_long(text, limit=30, overlap=5)
    assert all(_tokens(piece) <= 30 for piece in pieces)
    assert all(piece.endswith(".") and not piece.endswith(".5.") for piece in pieces[:-1])
    for piece in pieces[1:]:
        assert piece.split(" ", 1)[0] in text.split(" ")  # starts at a whole word


def test_a_sentence_longer_than_the_budget_is_cut_after_a_comma_and_still_fits() -> None:
    # One Chinese sentence of 80 tokens, with commas but no full stop before its end
    clause = "签收后请检查外包装是否完好"
    text = "，".join([clause] * 7) + "。"
    pieces = split_long(text, limit=30, overlap=0)
    assert len(pieces) > 1
    assert all(_tokens(piece) <= 30 for piece in pieces)
    assert all(piece.endswith("，") for piece in pieces[:-1])
    assert "".join(pieces) == text


def test_a_run_without_any_break_is_cut_where_the_budget_ends() -> None:
    text = "保修" * 100
    pieces = split_long(text, limit=25, overlap=0)
    assert [_tokens(piece) for piece in pieces[:-1]] == [25] * (len(pieces) - 1)
    assert "".join(pieces) == text


def test_a_paragraph_break_in_the_second_half_of_a_piece_is_preferred_to_a_full_stop() -> None:
    first = "Returned items must be unused. " * 6  # 6 sentences of 3 tokens
    second = "Refunds reach the original payment method. " * 6  # 6 of 5 tokens
    pieces = split_long(first.strip() + "\n\n" + second.strip(), limit=30, overlap=0)
    assert pieces[0] == first.strip()


def test_short_text_is_one_piece_and_blank_text_none() -> None:
    assert split_long("  Only one line.  ") == ["Only one line."]
    assert split_long(" \n\n ") == []


@pytest.mark.parametrize(("limit", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_a_budget_that_cannot_make_progress_is_refused(limit: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="overlap < limit"):
        split_long("text", limit=limit, overlap=overlap)


def test_the_default_budget_keeps_a_section_of_the_sample_policies_whole() -> None:
    # A long section of the sample KB's English returns policy: about 60 tokens
    body = " ".join(["Add photos of the problem to your after-sales request."] * 8)
    assert _tokens(body) < MAX_PASSAGE_TOKENS
    assert split_long(body) == [body]
    assert 0 < OVERLAP_TOKENS < MAX_PASSAGE_TOKENS


def test_markdown_sections_nest_by_heading_level_and_a_second_h1_is_a_section() -> None:
    document = split_markdown(
        "# Policy\n\nIntro.\n\n## A\n\na.\n\n#### A-deep\n\nd.\n\n### A-sub\n\ns.\n\n"
        "# Appendix\n\nx.\n\n## B\n\nb.\n",
        fallback_title="file",
    )
    assert document.title == "Policy"
    assert [(" > ".join(p.headings), p.body) for p in document.passages] == [
        ("", "Intro."),
        ("A", "a."),
        ("A > A-deep", "d."),
        ("A > A-sub", "s."),
        ("Appendix", "x."),
        ("Appendix > B", "b."),
    ]


def test_a_document_without_a_heading_is_titled_by_its_fallback() -> None:
    assert split_markdown("Just text.", fallback_title="notes").title == "notes"


_PROSE = st.text(
    alphabet=st.sampled_from(list("退货保修快递发票已签收ab cdefXYZ19。！？.!?，,;\n ")),
    max_size=400,
)


@given(text=_PROSE, limit=st.integers(1, 40), overlap_share=st.floats(0, 0.9))
@settings(deadline=None, max_examples=300)
def test_pieces_fit_the_budget_advance_overlap_within_theirs_and_cover_the_text(
    text: str, limit: int, overlap_share: float
) -> None:
    overlap = min(int(limit * overlap_share), limit - 1)
    spans = passage_spans(text, limit=limit, overlap=overlap)

    # Every piece is within the budget, without exception, and is non-empty text
    assert all(_tokens(text[start:end]) <= limit for start, end in spans)
    assert all(text[start:end].strip() == text[start:end] != "" for start, end in spans)
    # Pieces advance, and each overlaps the one before by at most `overlap` tokens
    for (start, end), (next_start, next_end) in itertools.pairwise(spans):
        assert start < next_start
        assert end < next_end
        if next_start < end:
            assert _tokens(text[next_start:end]) <= overlap
        else:  # adjacent: only whitespace between them
            assert not text[end:next_start].strip()
    # Together they cover every character that is not whitespace
    covered = {i for start, end in spans for i in range(start, end)}
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())
