import json
from pathlib import Path

import pytest

from kb_ingest.chunking import split_long, split_markdown
from kb_ingest.loaders import InvalidFile, UnsupportedFile, load, load_faq_jsonl, load_markdown
from kb_ingest.pipeline import ingest
from kefu.adapters.embedded_index import EmbeddedIndex
from kefu.adapters.embedders import HashingEmbedder
from kefu.head import FaqHead
from kefu.text import tokenize


def test_faq_entries_keep_their_questions_answer_category_and_language(tmp_path: Path) -> None:
    path = tmp_path / "faq.jsonl"
    entry = {
        "id": "ship-1",
        "questions": ["多久能到？", "快递几天到"],
        "answer": "2–4 天。",
        "category": "shipping",
        "lang": "zh",
    }
    path.write_text(json.dumps(entry, ensure_ascii=False) + "\n\n", encoding="utf-8")
    [chunk] = load_faq_jsonl(path)
    assert chunk.id == "ship-1"
    assert chunk.keys == ("多久能到？", "快递几天到")
    assert chunk.title == "多久能到？"
    assert (chunk.kind, chunk.lang, chunk.category, chunk.source) == (
        "faq",
        "zh",
        "shipping",
        "faq.jsonl",
    )


def test_an_faq_file_saved_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    # Given a JSONL FAQ as Notepad or Excel save it: UTF-8 with a BOM
    path = tmp_path / "faq.jsonl"
    entry = {"id": "ship-1", "questions": ["多久能到？"], "answer": "2–4 天。"}
    path.write_text(json.dumps(entry, ensure_ascii=False) + "\n", encoding="utf-8-sig")
    # When it is loaded, Then its entry is read as if the BOM were not there
    [chunk] = load(path)
    assert (chunk.id, chunk.title, chunk.lang) == ("ship-1", "多久能到？", "zh")


def test_an_faq_entry_declares_its_language_as_the_spreadsheets_do(tmp_path: Path) -> None:
    # Given entries that declare their language as a locale, and one the service does not speak
    path = tmp_path / "faq.jsonl"
    rows = [
        {"id": "a", "questions": ["Where is my parcel?"], "answer": "On its way.", "lang": "en-US"},
        {"id": "b", "questions": ["快递到哪了？"], "answer": "在路上。", "lang": "zh_Hans"},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    # Then the language is the one retrieval filters by
    assert [chunk.lang for chunk in load_faq_jsonl(path)] == ["en", "zh"]
    path.write_text(json.dumps({**rows[0], "lang": "fr"}) + "\n", encoding="utf-8")
    with pytest.raises(InvalidFile, match=r"faq\.jsonl line 1: language 'fr' is neither zh nor en"):
        load_faq_jsonl(path)


def test_an_faq_file_that_is_not_utf8_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "faq.jsonl"
    entry = {"id": "a", "questions": ["怎么退货？"], "answer": "申请售后。"}
    path.write_bytes(json.dumps(entry, ensure_ascii=False).encode("gbk"))
    with pytest.raises(InvalidFile, match=r"faq\.jsonl: not UTF-8 text"):
        load_faq_jsonl(path)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "line 1: not an FAQ entry"),
        ('{"id": "a", "answer": "x"}', "line 1: not an FAQ entry"),
        ('{"id": "a", "questions": [], "answer": "x"}', "needs questions and answer"),
    ],
)
def test_a_broken_faq_file_names_the_line(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(InvalidFile, match=reason):
        load_faq_jsonl(path)


def test_duplicate_faq_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    row = json.dumps({"id": "a", "questions": ["q"], "answer": "x"})
    path.write_text(f"{row}\n{row}\n", encoding="utf-8")
    with pytest.raises(InvalidFile, match="duplicate id 'a'"):
        load_faq_jsonl(path)


def test_markdown_is_split_at_headings_with_the_heading_path_as_section(tmp_path: Path) -> None:
    path = tmp_path / "returns.zh.md"
    path.write_text(
        "# 退货政策\n\n前言。\n\n## 无理由退货\n\n7 天内可退。\n\n### 不适用商品\n\n内衣。\n\n"
        "## 退款\n\n1–3 个工作日。\n",
        encoding="utf-8",
    )
    chunks = load_markdown(path)
    assert [(c.section, c.text) for c in chunks] == [
        ("", "前言。"),
        ("无理由退货", "7 天内可退。"),
        ("无理由退货 > 不适用商品", "内衣。"),
        ("退款", "1–3 个工作日。"),
    ]
    assert {c.title for c in chunks} == {"退货政策"}
    assert {c.lang for c in chunks} == {"zh"}
    assert chunks[2].id == "returns.zh.md#003"


def test_headings_inside_code_fences_do_not_split(tmp_path: Path) -> None:
    document = split_markdown("# T\n\n## A\n\n```\n# not a heading\n```\n", fallback_title="x")
    assert len(document.passages) == 1
    assert "# not a heading" in document.passages[0].body


def test_long_chinese_text_without_spaces_is_cut_at_sentence_ends_with_overlap() -> None:
    # Limit and overlap count tokens (Chinese bigrams), not characters: see test_chunking.py.
    sentence = "退货商品需保持原包装完整并附上全部配件。"
    pieces = split_long(sentence * 80, limit=200, overlap=30)
    assert len(pieces) > 1
    assert all(len(tokenize(piece)) <= 200 for piece in pieces)
    assert all(piece.endswith("。") for piece in pieces[:-1])
    # The second piece opens with the tail of the first one's last sentence.
    assert pieces[0].endswith(pieces[1][: pieces[1].index("。") + 1])


def test_an_unsupported_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFile, match=r"unsupported format \.exe"):
        load(tmp_path / "virus.exe")


def test_ingest_reports_a_broken_file_and_still_indexes_the_rest(
    tmp_path: Path, mini_kb_paths: list[Path]
) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{oops\n", encoding="utf-8")
    index = EmbeddedIndex(":memory:")
    report = ingest([*mini_kb_paths, broken], index=index, embedder=HashingEmbedder())
    assert report.files == 2
    assert report.failures == [
        (
            "broken.jsonl",
            "broken.jsonl line 1: not an FAQ entry "
            "(Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1))",
        )
    ]
    assert index.count() == report.entries == 8


def test_reingesting_unchanged_files_writes_nothing_and_prune_removes_dropped_files(
    mini_kb_paths: list[Path],
) -> None:
    index = EmbeddedIndex(":memory:")
    embedder = HashingEmbedder()
    first = ingest(mini_kb_paths, index=index, embedder=embedder)
    # The FAQ head is trained over the six FAQ entries and stored with the index
    assert first.head_classes == 6
    assert "FAQ head trained over 6 entries" in first.summary()
    stored = index.load_head("default")
    assert stored is not None
    assert FaqHead.from_bytes(stored).ids == tuple(sorted(index.faq_questions("default")))
    again = ingest(mini_kb_paths, index=index, embedder=embedder)
    assert (again.chunks_written, again.chunks_unchanged, again.version) == (0, 8, first.version)
    assert again.head_classes == 0  # nothing changed: not retrained

    pruned = ingest(mini_kb_paths[:1], index=index, embedder=embedder, prune=True)
    assert pruned.chunks_removed == 2
    assert index.count() == 6
