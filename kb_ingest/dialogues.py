"""Multi-turn dialogue evaluation: whole conversations through the chat service, one session each.

python -m kb_ingest.evaluate --dialogues FILE [--json] [--embedder E]

Each line of FILE is a dialogue, `{"id": ..., "turns": [{"user": ..., "expected_id": ...,
"outcome": ...}]}`: `expected_id` is the FAQ entry (chunk id) that should be the turn's first
source, null when no source should be there (small talk, an order lookup, a decline, a
hand-over); `outcome`, when given, must match too. A turn is right when both hold; a dialogue
succeeds when all its turns are right.

The chat service is built as `make run` builds it (the sample KB indexed with the configured
embedder, e5 by default; the sample order book), in a temporary data dir, so every run starts
from an empty session store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, get_args
from unittest.mock import patch

from kb_ingest import SAMPLE_KB_PATHS
from kb_ingest.pipeline import ingest
from kefu.bootstrap import build_chat_service, build_embedder, build_index
from kefu.models import ChatRequest, ChatResponse, Outcome
from kefu.settings import Settings
from kefu.text import detect_language

# A dialogue's language: the one its turns are in, or "mixed" when they are in both.
DialogueLanguage = Literal["zh", "en", "mixed"]
_OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))


class ChatHandler(Protocol):
    """What answers a customer's message within its session (`kefu.chat.ChatService`)."""

    def handle(self, request: ChatRequest) -> ChatResponse: ...


@dataclass(frozen=True, slots=True)
class DialogueTurn:
    user: str
    expected_id: str | None
    outcome: Outcome | None = None


@dataclass(frozen=True, slots=True)
class Dialogue:
    id: str
    turns: tuple[DialogueTurn, ...]


@dataclass(frozen=True, slots=True)
class TurnResult:
    dialogue_id: str
    turn: int  # 1 for a dialogue's first turn
    message: str
    expected_id: str | None
    expected_outcome: Outcome | None
    got_id: str | None
    got_outcome: Outcome
    got_intent: str
    got_model: str

    @property
    def right(self) -> bool:
        return self.got_id == self.expected_id and self.expected_outcome in (
            None,
            self.got_outcome,
        )


@dataclass(frozen=True, slots=True)
class DialogueResult:
    dialogue_id: str
    language: DialogueLanguage
    turns: tuple[TurnResult, ...]

    @property
    def success(self) -> bool:
        return all(turn.right for turn in self.turns)


@dataclass(frozen=True, slots=True)
class Tally:
    right: int
    total: int

    @property
    def accuracy(self) -> float | None:
        return self.right / self.total if self.total else None

    def as_dict(self) -> dict[str, Any]:
        return {"right": self.right, "total": self.total, "accuracy": self.accuracy}


@dataclass(frozen=True, slots=True)
class LanguageBreakdown:
    turns: Tally
    dialogues: Tally


@dataclass(frozen=True, slots=True)
class DialogueReport:
    turns: Tally
    dialogues: Tally
    by_language: dict[str, LanguageBreakdown]
    by_position: dict[str, Tally]  # "first" and "later" turns
    wrong: tuple[TurnResult, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "turns": self.turns.as_dict(),
            "dialogues": self.dialogues.as_dict(),
            "by_language": {
                language: {"turns": b.turns.as_dict(), "dialogues": b.dialogues.as_dict()}
                for language, b in self.by_language.items()
            },
            "by_position": {position: t.as_dict() for position, t in self.by_position.items()},
            "wrong": [asdict(turn) for turn in self.wrong],
        }


def load_dialogues(path: Path) -> list[Dialogue]:
    """The dialogues of a JSONL file; a malformed line raises ValueError naming it."""
    dialogues = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            dialogues.append(_dialogue(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: {exc}") from exc
    return dialogues


def _dialogue(row: dict[str, Any]) -> Dialogue:
    turns = []
    for turn in row["turns"]:
        outcome = turn.get("outcome")
        if outcome is not None and outcome not in _OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        expected = turn["expected_id"]
        turns.append(
            DialogueTurn(
                user=str(turn["user"]),
                expected_id=None if expected is None else str(expected),
                outcome=outcome,
            )
        )
    if not turns:
        raise ValueError("a dialogue needs at least one turn")
    return Dialogue(id=str(row["id"]), turns=tuple(turns))


def dialogue_language(dialogue: Dialogue) -> DialogueLanguage:
    """The language the service detects in every turn, or "mixed" when the turns differ."""
    languages = {detect_language(turn.user) for turn in dialogue.turns}
    return languages.pop() if len(languages) == 1 else "mixed"


def run_dialogue(service: ChatHandler, dialogue: Dialogue) -> DialogueResult:
    """One session: the first turn opens it, the others continue the session it returned."""
    session_id: str | None = None
    results = []
    for number, turn in enumerate(dialogue.turns, start=1):
        response = service.handle(ChatRequest(session_id=session_id, message=turn.user))
        session_id = session_id or response.session_id
        results.append(
            TurnResult(
                dialogue_id=dialogue.id,
                turn=number,
                message=turn.user,
                expected_id=turn.expected_id,
                expected_outcome=turn.outcome,
                got_id=response.sources[0].id if response.sources else None,
                got_outcome=response.outcome,
                got_intent=response.intent,
                got_model=response.model,
            )
        )
    return DialogueResult(dialogue.id, dialogue_language(dialogue), tuple(results))


def summarise(results: Sequence[DialogueResult]) -> DialogueReport:
    turns = [turn for result in results for turn in result.turns]

    def tally_turns(selected: Sequence[TurnResult]) -> Tally:
        return Tally(sum(turn.right for turn in selected), len(selected))

    def tally_dialogues(selected: Sequence[DialogueResult]) -> Tally:
        return Tally(sum(result.success for result in selected), len(selected))

    by_language = {}
    for language in get_args(DialogueLanguage):
        selected = [result for result in results if result.language == language]
        if selected:
            by_language[language] = LanguageBreakdown(
                turns=tally_turns([turn for result in selected for turn in result.turns]),
                dialogues=tally_dialogues(selected),
            )
    return DialogueReport(
        turns=tally_turns(turns),
        dialogues=tally_dialogues(results),
        by_language=by_language,
        by_position={
            "first": tally_turns([turn for turn in turns if turn.turn == 1]),
            "later": tally_turns([turn for turn in turns if turn.turn > 1]),
        },
        wrong=tuple(turn for turn in turns if not turn.right),
    )


def _pct(tally: Tally) -> str:
    accuracy = tally.accuracy
    share = "    -" if accuracy is None else f"{100 * accuracy:5.1f}%"
    return f"{tally.right:>4}/{tally.total:<4} {share}"


def render(report: DialogueReport) -> str:
    def expected(turn: TurnResult) -> str:
        outcome = f" / {turn.expected_outcome}" if turn.expected_outcome else ""
        return f"{turn.expected_id or '(no source)'}{outcome}"

    def got(turn: TurnResult) -> str:
        return (
            f"{turn.got_id or '(no source)'} / {turn.got_outcome}"
            f"  [{turn.got_intent}, {turn.got_model}]"
        )

    lines = [
        f"{'per-turn accuracy':<22}{_pct(report.turns)}",
        f"{'dialogue success':<22}{_pct(report.dialogues)}",
        "",
        f"{'language':<10}{'turns right':<24}dialogues succeeded",
        *(
            f"{language:<10}{_pct(b.turns):<24}{_pct(b.dialogues)}"
            for language, b in report.by_language.items()
        ),
        "",
        f"{'first turns':<22}{_pct(report.by_position['first'])}",
        f"{'later turns':<22}{_pct(report.by_position['later'])}",
        "",
        f"wrong turns ({len(report.wrong)}):",
    ]
    for turn in report.wrong:
        lines += [
            f"  {turn.dialogue_id} turn {turn.turn}: {turn.message}",
            f"      expected {expected(turn)}",
            f"      got      {got(turn)}",
        ]
    return "\n".join(lines)


@contextmanager
def local_chat_service(settings: Settings, data_dir: Path | None = None) -> Iterator[ChatHandler]:
    """The chat service `make run` serves (sample KB, sample order book), in `data_dir`, or in a
    temporary data dir that is removed afterwards."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            temporary = tempfile.TemporaryDirectory(prefix="kefu-dialogues-")
            data_dir = Path(stack.enter_context(temporary))
        data_dir.mkdir(parents=True, exist_ok=True)
        # The dialogues score the bot's answers turn by turn: a hand-over after two misses in a
        # row would leave the rest of a dialogue to a human, so only the other triggers apply.
        settings = settings.model_copy(
            update={"data_dir": data_dir, "orders": "sample", "handover_after_failures": 10}
        )
        embedder = build_embedder(settings)
        index = build_index(settings)
        ingest(SAMPLE_KB_PATHS, index=index, embedder=embedder, tenant=settings.tenant, prune=True)
        yield build_chat_service(settings, embedder=embedder, index=index)


def report_dialogues(
    path: Path, settings: Settings, *, as_json: bool, data_dir: Path | None = None
) -> str:
    """The CLI's `--dialogues`: every dialogue of `path` through the local chat service, the
    report as text or one JSON object; how long indexing and the dialogues took goes to stderr.
    With `data_dir` the sessions, tickets and turn records stay there (for `kefu.report`)."""
    from kefu.observability import logger

    dialogues = load_dialogues(path)
    # The service logs every turn, and writes its metrics (EMF), to stdout, where the report goes.
    level = logger.log_level
    logger.setLevel(logging.WARNING)
    try:
        with patch.dict(os.environ, {"POWERTOOLS_METRICS_DISABLED": "true"}):
            started = time.perf_counter()
            with local_chat_service(settings, data_dir) as service:
                indexed = time.perf_counter()
                report = summarise([run_dialogue(service, dialogue) for dialogue in dialogues])
                done = time.perf_counter()
    finally:
        logger.setLevel(level)
    print(
        f"indexed the sample KB in {indexed - started:.1f} s; {len(dialogues)} dialogues, "
        f"{report.turns.total} turns in {done - indexed:.1f} s",
        file=sys.stderr,
    )
    if as_json:
        return json.dumps(report.as_dict(), ensure_ascii=False, indent=2)
    return render(report)
