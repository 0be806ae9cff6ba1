"""The multi-turn dialogue evaluation scores whole conversations, and its dialogue set is sound."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from kb_ingest import SAMPLE_KB, SAMPLE_KB_PATHS
from kb_ingest import dialogues as dl
from kb_ingest import evaluate as ev
from kb_ingest.loaders import load
from kb_ingest.pipeline import expand
from kefu.models import ChatRequest, ChatResponse, Outcome, Source
from kefu.text import detect_language

DIALOGUES = SAMPLE_KB / "eval" / "dialogues.jsonl"


class _CannedChat:
    """A chat service answering each message with a canned first source and outcome, and
    recording the session each request continued."""

    def __init__(self, canned: dict[str, tuple[str | None, Outcome]]) -> None:
        self._canned = canned
        self.requests: list[ChatRequest] = []
        self._sessions = 0

    def handle(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        if request.session_id is None:
            self._sessions += 1
        source, outcome = self._canned[request.message]
        return ChatResponse(
            session_id=request.session_id or f"session-{self._sessions}",
            turn_id="t",
            answer="…",
            language=detect_language(request.message),
            sources=[] if source is None else [Source(id=source, title=source, score=0.9)],
            intent="test",
            confidence=0.9,
            outcome=outcome,
            model="faq" if source else "rules",
        )


CANNED: dict[str, tuple[str | None, Outcome]] = {
    "我想退货": ("returns-02-zh", "answered"),
    "那运费呢？": ("refunds-06-zh", "answered"),  # the wrong entry
    "how long does a refund take?": ("refunds-01-en", "answered"),
    "and to a credit card?": ("refunds-03-en", "answered"),
    "hello": (None, "answered"),
    "I want to talk to a person": (None, "declined"),  # the wrong outcome
}


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


ROWS: list[dict[str, Any]] = [
    {
        "id": "zh-shipping",
        "turns": [
            {"user": "我想退货", "expected_id": "returns-02-zh"},
            {"user": "那运费呢？", "expected_id": "returns-05-zh", "outcome": "answered"},
        ],
    },
    {
        "id": "en-refund",
        "turns": [
            {"user": "how long does a refund take?", "expected_id": "refunds-01-en"},
            {"user": "and to a credit card?", "expected_id": "refunds-03-en"},
        ],
    },
    {
        "id": "mixed-handover",
        "turns": [
            {"user": "hello", "expected_id": None, "outcome": "answered"},
            {"user": "我想退货", "expected_id": "returns-02-zh"},
            {"user": "I want to talk to a person", "expected_id": None, "outcome": "handed_over"},
        ],
    },
]


@pytest.fixture
def scored(tmp_path: Path) -> tuple[_CannedChat, dl.DialogueReport]:
    chat = _CannedChat(CANNED)
    dialogues = dl.load_dialogues(_write(tmp_path / "d.jsonl", ROWS))
    report = dl.summarise([dl.run_dialogue(chat, d) for d in dialogues])
    return chat, report


def test_each_dialogue_is_one_session_continued_with_the_id_its_first_reply_gave(
    scored: tuple[_CannedChat, dl.DialogueReport],
) -> None:
    chat, _ = scored
    sessions = [request.session_id for request in chat.requests]
    assert sessions == [None, "session-1", None, "session-2", None, "session-3", "session-3"]


def test_a_turn_is_right_when_its_first_source_and_any_outcome_given_match(
    scored: tuple[_CannedChat, dl.DialogueReport],
) -> None:
    _, report = scored
    # Seven turns: the wrong entry for "那运费呢？", a decline where a hand-over was expected.
    assert (report.turns.right, report.turns.total) == (5, 7)
    assert [(w.dialogue_id, w.turn) for w in report.wrong] == [
        ("zh-shipping", 2),
        ("mixed-handover", 3),
    ]
    shipping, handover = report.wrong
    assert (shipping.expected_id, shipping.got_id) == ("returns-05-zh", "refunds-06-zh")
    assert (handover.expected_outcome, handover.got_outcome) == ("handed_over", "declined")
    assert handover.got_id is handover.expected_id is None


def test_no_expected_source_is_wrong_when_one_is_given_and_an_outcome_left_out_is_not_checked() -> (
    None
):
    def turn(expected: str | None, outcome: Outcome | None, got: str | None) -> dl.TurnResult:
        return dl.TurnResult("d", 1, "m", expected, outcome, got, "declined", "i", "rules")

    assert not turn(None, None, "shipping-01-en").right
    assert turn(None, None, None).right
    assert turn("shipping-01-en", None, "shipping-01-en").right
    assert not turn("shipping-01-en", "answered", "shipping-01-en").right


def test_a_dialogue_succeeds_only_when_every_turn_is_right_and_is_broken_down(
    scored: tuple[_CannedChat, dl.DialogueReport],
) -> None:
    _, report = scored
    assert (report.dialogues.right, report.dialogues.total) == (1, 3)
    by_language = {
        language: (b.turns.right, b.turns.total, b.dialogues.right, b.dialogues.total)
        for language, b in report.by_language.items()
    }
    assert by_language == {"zh": (1, 2, 0, 1), "en": (2, 2, 1, 1), "mixed": (2, 3, 0, 1)}
    first, later = report.by_position["first"], report.by_position["later"]
    assert (first.right, first.total, later.right, later.total) == (3, 3, 2, 4)


def test_the_json_report_is_one_object_with_the_figures_and_each_wrong_turn(
    scored: tuple[_CannedChat, dl.DialogueReport],
) -> None:
    _, report = scored
    shape = json.loads(json.dumps(report.as_dict()))
    assert set(shape) == {"turns", "dialogues", "by_language", "by_position", "wrong"}
    assert shape["turns"] == {"right": 5, "total": 7, "accuracy": 5 / 7}
    assert shape["by_position"]["first"]["accuracy"] == 1.0
    assert shape["by_language"]["en"]["dialogues"] == {"right": 1, "total": 1, "accuracy": 1.0}
    assert shape["wrong"][0] == {
        "dialogue_id": "zh-shipping",
        "turn": 2,
        "message": "那运费呢？",
        "expected_id": "returns-05-zh",
        "expected_outcome": "answered",
        "got_id": "refunds-06-zh",
        "got_outcome": "answered",
        "got_intent": "test",
        "got_model": "faq",
    }
    text = dl.render(report)
    assert "zh-shipping turn 2: 那运费呢？" in text
    assert "expected (no source) / handed_over" in text


def test_the_cli_runs_the_dialogues_through_the_local_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    kept: list[Path | None] = []

    @contextmanager
    def canned_service(settings: Any, data_dir: Path | None = None) -> Iterator[_CannedChat]:
        assert settings.embedder == "hashing"  # the CLI's settings reach the service
        kept.append(data_dir)
        yield _CannedChat(CANNED)

    monkeypatch.setattr(dl, "local_chat_service", canned_service)
    path = _write(tmp_path / "d.jsonl", ROWS)
    assert ev.main(["--dialogues", str(path), "--embedder", "hashing", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["dialogues"]["right"] == 1
    assert "7 turns" in out.err
    assert (
        ev.main(
            ["--dialogues", str(path), "--embedder", "hashing", "--keep", str(tmp_path / "kept")]
        )
        == 0
    )
    assert kept == [None, tmp_path / "kept"]
    with pytest.raises(SystemExit):
        ev.main(["--dialogues", str(path), "--sample"])
    with pytest.raises(SystemExit):
        ev.main(["--sample", "--keep", str(tmp_path / "kept")])


def test_a_turn_with_an_unknown_outcome_is_refused(tmp_path: Path) -> None:
    row = {"id": "x", "turns": [{"user": "hi", "expected_id": None, "outcome": "ignored"}]}
    with pytest.raises(ValueError, match=r"d\.jsonl:1: unknown outcome 'ignored'"):
        dl.load_dialogues(_write(tmp_path / "d.jsonl", [row]))


# --- the sample dialogue set -----------------------------------------------------------------


def _kb() -> dict[str, Any]:
    return {chunk.id: chunk for path, _ in expand(SAMPLE_KB_PATHS) for chunk in load(path)}


def test_the_sample_dialogues_are_enough_short_conversations_in_both_languages() -> None:
    dialogues = dl.load_dialogues(DIALOGUES)
    assert len(dialogues) >= 40
    assert len({d.id for d in dialogues}) == len(dialogues)
    assert all(2 <= len(d.turns) <= 5 for d in dialogues)
    languages = [dl.dialogue_language(d) for d in dialogues]
    assert languages.count("zh") >= 15
    assert languages.count("en") >= 15


def test_every_expected_entry_exists_and_is_in_the_language_of_its_turn() -> None:
    kb = _kb()
    for dialogue in dl.load_dialogues(DIALOGUES):
        for turn in dialogue.turns:
            if turn.expected_id is not None:
                chunk = kb.get(turn.expected_id)
                assert chunk is not None, (dialogue.id, turn.expected_id)
                assert chunk.lang == detect_language(turn.user), (dialogue.id, turn.user)


def test_no_turn_copies_a_kb_question() -> None:
    def norm(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())

    questions = {norm(key) for chunk in _kb().values() for key in chunk.keys}
    copied = [
        turn.user
        for dialogue in dl.load_dialogues(DIALOGUES)
        for turn in dialogue.turns
        if norm(turn.user) in questions
    ]
    assert copied == []
