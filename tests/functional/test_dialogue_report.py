"""The dialogue evaluation keeps its records, and `kefu.report` reads them back: the figures the
report gives over the sample dialogues come from the same chat service `make run` serves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import reset_composition_root

DIALOGUES = [
    {
        "id": "answered",
        "turns": [{"user": "你好", "expected_id": None, "outcome": "answered"}],
    },
    {
        "id": "asks-for-a-human",
        "turns": [
            {"user": "你好", "expected_id": None, "outcome": "answered"},
            {"user": "转人工", "expected_id": None, "outcome": "handed_over"},
            {"user": "还在吗？", "expected_id": None, "outcome": "handed_over"},
        ],
    },
]


def test_the_report_reads_what_the_dialogues_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kb_ingest import evaluate
    from kefu import report

    path = tmp_path / "dialogues.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in DIALOGUES))
    kept = tmp_path / "kept"

    # Given the dialogues run through the local chat service, their data kept
    assert (
        evaluate.main(
            ["--dialogues", str(path), "--embedder", "hashing", "--keep", str(kept), "--json"]
        )
        == 0
    )
    scored = json.loads(capsys.readouterr().out)
    assert scored["turns"]["total"] == 4

    # When the report reads that data dir
    monkeypatch.setenv("KEFU_DATA_DIR", str(kept))
    reset_composition_root()
    try:
        assert report.main(["--json"]) == 0
    finally:
        reset_composition_root()
    figures = json.loads(capsys.readouterr().out)

    # Then it counts the sessions and turns the dialogues made, and the one hand-over once,
    # by what started it (the turn after it is the human's, not a second hand-over)
    assert figures["sessions"] == 2
    assert figures["turns"] == 4
    assert figures["resolved_sessions"] == 1
    assert figures["handovers"] == {"customer_request": 1}
