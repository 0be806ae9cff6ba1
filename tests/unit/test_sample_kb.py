"""The bundled sample knowledge base is complete and its evaluation set is consistent."""

import json
from collections import Counter

from kb_ingest import SAMPLE_KB
from kb_ingest.loaders import load, load_markdown
from kb_ingest.pipeline import expand
from kb_ingest.transcripts import CATEGORIES as TEN_CATEGORIES

CATEGORIES = set(TEN_CATEGORIES)


def _faq() -> list:
    return [chunk for path, _ in expand([SAMPLE_KB / "faq"]) for chunk in load(path)]


def _queries(name: str) -> list[dict]:
    path = SAMPLE_KB / "eval" / name
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def test_every_topic_has_both_languages_and_enough_similar_questions() -> None:
    entries = _faq()
    per_language = Counter(entry.lang for entry in entries)
    assert per_language["zh"] >= 120
    assert per_language["en"] >= 120
    topics = Counter(entry.id.rsplit("-", 1)[0] for entry in entries)
    assert set(topics.values()) == {2}
    assert all(len(entry.keys) >= 4 for entry in entries)  # standard + at least 3 similar
    assert {entry.category for entry in entries} == CATEGORIES


def test_answers_carry_no_contact_details() -> None:
    import re

    contact = re.compile(r"\d{3,4}[- ]?\d{3,4}[- ]?\d{4}|@|https?://|www\.")
    assert [e.id for e in _faq() if contact.search(e.text)] == []


def test_policy_documents_have_several_sections_in_both_languages() -> None:
    documents = sorted((SAMPLE_KB / "docs").glob("*.md"))
    assert len(documents) >= 4
    for path in documents:
        passages = load_markdown(path)
        assert len({p.section.split(" > ")[0] for p in passages}) >= 5, path.name
    assert {p.suffixes[0] for p in documents} == {".zh", ".en"}


def test_the_evaluation_set_points_at_real_entries_in_the_query_language() -> None:
    from kefu.text import detect_language

    ids = {entry.id: entry.lang for entry in _faq()}
    queries = _queries("queries.jsonl")
    covered = [q for q in queries if q["expected_id"] is not None]
    uncovered = [q for q in queries if q["expected_id"] is None]
    assert len(covered) >= 100
    assert len(uncovered) >= 30
    assert {detect_language(q["query"]) for q in uncovered} == {"zh", "en"}
    for query in covered:
        assert ids[query["expected_id"]] == detect_language(query["query"]), query


def test_evaluation_questions_are_not_copies_of_kb_questions() -> None:
    def norm(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())

    kb_questions = {norm(key) for entry in _faq() for key in entry.keys}
    for name in ("queries.jsonl", "dev_queries.jsonl"):
        assert [q["query"] for q in _queries(name) if norm(q["query"]) in kb_questions] == []
