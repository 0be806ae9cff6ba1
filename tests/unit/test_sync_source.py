"""One file at a time, as the ingest Lambda sees them: stable ids, replace, remove."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kb_ingest.pipeline import remove_source, sync_source
from kefu.adapters.embedded_index import EmbeddedIndex
from kefu.adapters.embedders import HashingEmbedder

EMBEDDER = HashingEmbedder()


def _faq(path: Path, *answers: str) -> Path:
    rows = [
        {"id": f"e{n}", "questions": [f"question {n}?", f"other wording {n}"], "answer": a}
        for n, a in enumerate(answers)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def test_an_unchanged_file_changes_nothing_and_a_changed_one_is_replaced(tmp_path: Path) -> None:
    index = EmbeddedIndex(":memory:")
    path = _faq(tmp_path / "f.jsonl", "one", "two", "three")
    first = sync_source(path, source="kb/f.jsonl", index=index, embedder=EMBEDDER)
    assert (first.chunks_written, first.chunks_removed) == (3, 0)
    version = index.version

    again = sync_source(path, source="kb/f.jsonl", index=index, embedder=EMBEDDER)
    assert (again.chunks_written, again.chunks_unchanged) == (0, 3)
    assert index.version == version

    _faq(path, "one", "TWO, revised")
    changed = sync_source(path, source="kb/f.jsonl", index=index, embedder=EMBEDDER)
    assert (changed.chunks_written, changed.chunks_unchanged, changed.chunks_removed) == (1, 1, 1)
    assert set(index.fingerprints("default", source="kb/f.jsonl")) == {"e0", "e1"}
    assert index.version != version


def test_a_removed_file_takes_its_chunks_and_only_its_own(tmp_path: Path) -> None:
    index = EmbeddedIndex(":memory:")
    sync_source(_faq(tmp_path / "a.jsonl", "x"), source="a.jsonl", index=index, embedder=EMBEDDER)
    doc = tmp_path / "b.md"
    doc.write_text("# Policy\n\n## Returns\n\nSeven days.\n\n## Warranty\n\nOne year.\n", "utf-8")
    sync_source(doc, source="docs/b.md", index=index, embedder=EMBEDDER)
    assert set(index.fingerprints("default", source="docs/b.md")) == {
        "docs/b.md#001",
        "docs/b.md#002",
    }
    assert remove_source("docs/b.md", index=index) == 2
    assert set(index.fingerprints("default")) == {"e0"}
    assert remove_source("docs/b.md", index=index) == 0


def test_a_file_that_cannot_be_parsed_changes_nothing(tmp_path: Path) -> None:
    index = EmbeddedIndex(":memory:")
    path = _faq(tmp_path / "f.jsonl", "one")
    sync_source(path, source="f.jsonl", index=index, embedder=EMBEDDER)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1"):
        sync_source(path, source="f.jsonl", index=index, embedder=EMBEDDER)
    assert set(index.fingerprints("default")) == {"e0"}


def test_an_id_another_file_has_is_refused_not_overwritten(tmp_path: Path) -> None:
    index = EmbeddedIndex(":memory:")
    sync_source(_faq(tmp_path / "a.jsonl", "one"), source="a.jsonl", index=index, embedder=EMBEDDER)
    with pytest.raises(ValueError, match="already belong to a file already indexed"):
        sync_source(
            _faq(tmp_path / "b.jsonl", "clash"), source="b.jsonl", index=index, embedder=EMBEDDER
        )
    assert index.fingerprints("default", source="a.jsonl").keys() == {"e0"}
    assert index.fingerprints("default", source="b.jsonl") == {}


def test_the_same_id_in_two_tenants_is_two_entries(tmp_path: Path) -> None:
    index = EmbeddedIndex(":memory:")
    path = _faq(tmp_path / "f.jsonl", "one")
    for tenant in ("acme", "beta"):
        sync_source(path, source="f.jsonl", index=index, embedder=EMBEDDER, tenant=tenant)
    assert remove_source("f.jsonl", index=index, tenant="beta") == 1
    assert index.fingerprints("acme").keys() == {"e0"}
    assert index.fingerprints("beta") == {}


def test_a_batch_with_two_files_claiming_one_id_keeps_the_first(tmp_path: Path) -> None:
    from kb_ingest.pipeline import ingest

    folder = tmp_path / "kb"
    folder.mkdir()
    _faq(folder / "a.jsonl", "one")
    _faq(folder / "b.jsonl", "clash")
    report = ingest([folder], index=EmbeddedIndex(":memory:"), embedder=EMBEDDER)
    assert report.files == 1
    assert [name for name, _ in report.failures] == ["b.jsonl"]
    assert "already belong to a.jsonl" in report.failures[0][1]


def test_a_re_ingested_folder_drops_what_a_file_lost_and_lets_an_entry_move(
    tmp_path: Path,
) -> None:
    from kb_ingest.pipeline import ingest

    folder = tmp_path / "kb"
    folder.mkdir()
    a = folder / "a.jsonl"
    b = folder / "b.jsonl"
    rows = {"r1": "one", "r2": "two", "r3": "three"}

    def write(path: Path, *ids: str) -> None:
        lines = [
            json.dumps({"id": i, "questions": [f"question {i}?"], "answer": rows[i]}) for i in ids
        ]
        path.write_text("\n".join(lines), encoding="utf-8")

    index = EmbeddedIndex(":memory:")
    write(a, "r1", "r2")
    write(b, "r3")
    assert ingest([folder], index=index, embedder=EMBEDDER).failures == []

    write(a, "r1")  # r2 moves to b
    write(b, "r3", "r2")
    moved = ingest([folder], index=index, embedder=EMBEDDER)
    assert moved.failures == []
    assert index.fingerprints("default", source="a.jsonl").keys() == {"r1"}
    assert index.fingerprints("default", source="b.jsonl").keys() == {"r2", "r3"}

    a.write_text("", encoding="utf-8")  # a is emptied
    emptied = ingest([folder], index=index, embedder=EMBEDDER)
    assert emptied.chunks_removed == 1
    assert index.fingerprints("default").keys() == {"r2", "r3"}


def test_the_same_file_named_two_ways_is_one_source(tmp_path: Path) -> None:
    from kb_ingest.pipeline import expand

    folder = tmp_path / "kb" / "faq"
    folder.mkdir(parents=True)
    _faq(folder / "a.jsonl", "one")
    root = tmp_path / "kb"
    assert expand([root, folder / "a.jsonl", folder], root=root) == [
        (folder / "a.jsonl", "faq/a.jsonl")
    ]


def test_a_run_over_many_files_reads_the_stored_chunks_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Against OpenSearch each read is a paged scan of the tenant: one per run, not one per file.
    from kb_ingest.pipeline import ingest

    def write(name: str, answer: str) -> None:
        row = {"id": name, "questions": [f"question about {name}?"], "answer": answer}
        (folder / f"{name}.jsonl").write_text(json.dumps(row), encoding="utf-8")

    folder = tmp_path / "kb"
    folder.mkdir()
    for n in range(5):
        write(f"f{n}", f"answer {n}")
    index = EmbeddedIndex(":memory:")
    assert ingest([folder], index=index, embedder=EMBEDDER, train_head=False).files == 5
    reads: list[str] = []
    for name in ("catalog", "fingerprints"):
        method = getattr(index, name)
        monkeypatch.setattr(
            index, name, lambda *a, _m=method, _n=name, **k: reads.append(_n) or _m(*a, **k)
        )

    (folder / "f4.jsonl").unlink()
    write("f0", "answer 0, changed")
    again = ingest([folder], index=index, embedder=EMBEDDER, prune=True, train_head=False)

    assert reads == ["catalog"]
    assert (again.chunks_written, again.chunks_removed, again.failures) == (1, 1, [])
    assert set(index.fingerprints("default")) == {"f0", "f1", "f2", "f3"}
