"""`python -m kb_ingest`: a summary, failures named with their reason, a clear config error."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb_ingest.__main__ import main


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KEFU_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_a_bad_file_is_reported_and_the_rest_still_lands(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], mini_kb_paths: list[Path]
) -> None:
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"id": "x", "questions": ["q"]}\n', encoding="utf-8")
    argv = [*map(str, mini_kb_paths), str(bad), "--embedder", "hashing", "--quiet"]
    argv += ["--root", str(tmp_path)]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "files 2, FAQ entries 6, chunks 8 (8 written" in out
    assert "failed: broken.jsonl: broken.jsonl line 1" in out
    assert (data_dir / "index-hashing.sqlite3").is_file()

    again = [*map(str, mini_kb_paths), "--embedder", "hashing", "--quiet", "--root", str(tmp_path)]
    assert main(again) == 0
    assert "(0 written, 8 unchanged" in capsys.readouterr().out


def test_opensearch_without_an_endpoint_is_a_configuration_error(
    data_dir: Path, capsys: pytest.CaptureFixture[str], mini_kb_paths: list[Path]
) -> None:
    argv = [str(mini_kb_paths[0]), "--target", "opensearch", "--embedder", "hashing"]
    assert main(argv) == 2
    assert "KEFU_OPENSEARCH_URL is required" in capsys.readouterr().err


def test_opensearch_needs_the_embedder_named(data_dir: Path, mini_kb_paths: list[Path]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(mini_kb_paths[0]), "--target", "opensearch"])
    assert exit_info.value.code == 2
