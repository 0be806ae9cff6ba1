"""Personal data a customer types is masked before it is stored, logged or sent to a model: a test
plants some and looks for it everywhere the turn went."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from kefu.adapters.sessions import SqliteSessionStore
from kefu.chat import ChatService
from kefu.models import ChatRequest
from kefu.ports import AnswerContext, ModelAnswer

PHONE, EMAIL = "13812345678", "li.ming@example.com"
ID_NUMBER, CARD = "11010519491231002X", "4111 1111 1111 1111"
PLANTED = (PHONE, EMAIL, ID_NUMBER, CARD)


class _RecordingModel:
    name = "recording"

    def __init__(self) -> None:
        self.contexts: list[AnswerContext] = []

    def answer(self, context: AnswerContext) -> ModelAnswer:
        self.contexts.append(context)
        return ModelAnswer(text="Water damage is not covered by the warranty.", model=self.name)


def test_planted_personal_data_is_nowhere_in_the_clear(
    retriever: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a customer who types every kind of contact and identity data into two messages
    model = _RecordingModel()
    store = tmp_path / "sessions.sqlite3"
    service = ChatService(retriever=retriever, model=model, sessions=SqliteSessionStore(store))
    first = service.handle(
        ChatRequest(
            message=f"Is damage from water or drops covered under warranty? Call me on {PHONE} "
            f"or mail {EMAIL}"
        )
    )
    service.handle(
        ChatRequest(
            session_id=first.session_id,
            message=f"Is water damage covered under warranty? My ID is {ID_NUMBER}, card {CARD}",
        )
    )

    # Then the model was asked, but saw none of it, in the question or the history
    assert model.contexts, "the passage question should reach the model"
    sent = " ".join(
        [c.question for c in model.contexts]
        + [t.message for c in model.contexts for t in c.history]
    )
    assert "[phone]" in sent or "[email]" in sent
    # And neither the stored turns nor the logs hold it
    with sqlite3.connect(store) as db:
        stored = " ".join(str(row) for row in db.execute("SELECT * FROM conversations"))
    logged = capsys.readouterr()
    for place, text in (("model", sent), ("store", stored), ("log", logged.out + logged.err)):
        for value in PLANTED:
            assert value not in text, f"{value} in the clear in the {place}"
            assert value.replace(" ", "") not in text.replace(" ", ""), place


class _ChattyModel:
    """A model that writes contact details: one from its source, one of the customer's, and
    one it made up."""

    name = "chatty"

    def answer(self, context: AnswerContext) -> ModelAnswer:
        return ModelAnswer(
            text="Not covered. We will write to you at li.ming@example.com; for repairs call "
            "400-820-1234 or the warranty desk at 021-5555-0199.",
            model=self.name,
        )


def test_an_answer_never_carries_contact_details_nobody_gave(retriever: Any) -> None:
    from kefu.models import Chunk, SearchHit

    # Given a source that names the warranty desk's number, and a customer who gives an e-mail
    desk = Chunk(
        id="warranty.en.md#9",
        kind="passage",
        lang="en",
        title="Warranty",
        text="Water damage is not covered. Warranty desk: 021-5555-0199.",
        keys=(),
    )

    class _Index:
        version = "1"

        def search(self, query: Any) -> list[SearchHit]:
            return [SearchHit(chunk=desk, score=0.95, dense=0.95, lexical=0.0, nearest=0.95)]

        def load_head(self, tenant: str) -> None:
            return None

    retriever.index = _Index()
    service = ChatService(
        retriever=retriever, model=_ChattyModel(), sessions=SqliteSessionStore(":memory:")
    )

    reply = service.handle(
        ChatRequest(message="Is water damage covered? I'm li.ming@example.com", language="en")
    )

    # Then the customer's e-mail and the source's number stay; the made-up number does not
    assert "li.ming@example.com" in reply.answer
    assert "021-5555-0199" in reply.answer
    assert "400-820-1234" not in reply.answer
    assert "[phone]" in reply.answer

    # And the stored answer keeps the source's number but not the customer's e-mail
    stored = service.sessions.get(reply.session_id)
    assert stored is not None
    (turn,) = stored.turns
    assert "li.ming@example.com" not in turn.answer
    assert "[email]" in turn.answer
    assert "021-5555-0199" in turn.answer
    assert "400-820-1234" not in turn.answer


def test_a_deployments_own_patterns_are_masked_in_messages_and_answers(retriever: Any) -> None:
    import re

    from kefu.adapters.sessions import SqliteSessionStore
    from kefu.settings import Settings

    class _Echo:
        name = "echo"

        def __init__(self) -> None:
            self.contexts: list[AnswerContext] = []

        def answer(self, context: AnswerContext) -> ModelAnswer:
            self.contexts.append(context)
            return ModelAnswer(text="Noted your member number VIP-654321.", model=self.name)

    from kefu.models import Chunk, SearchHit

    policy = Chunk(
        id="policy#1",
        kind="passage",
        lang="en",
        title="Warranty",
        text="Water damage is not covered by the warranty.",
        keys=(),
    )

    class _Index:
        version = "1"

        def search(self, query: Any) -> list[SearchHit]:
            return [SearchHit(chunk=policy, score=0.95, dense=0.95, lexical=0.0, nearest=0.95)]

        def load_head(self, tenant: str) -> None:
            return None

    retriever.index = _Index()
    patterns = Settings(mask_patterns=[r"VIP-\d{6}"]).mask_patterns
    model = _Echo()
    service = ChatService(
        retriever=retriever,
        model=model,
        sessions=SqliteSessionStore(":memory:"),
        mask_patterns=[re.compile(p) for p in patterns],
    )
    reply = service.handle(
        ChatRequest(message="Is damage from water or drops covered under warranty? VIP-123456")
    )
    assert model.contexts, reply
    assert "VIP-123456" not in " ".join(c.question for c in model.contexts)
    assert "[redacted]" in model.contexts[0].question
    assert "VIP-654321" not in reply.answer
    assert "[redacted]" in reply.answer


def test_a_mask_pattern_that_does_not_compile_is_refused() -> None:
    from pydantic import ValidationError

    from kefu.settings import Settings

    with pytest.raises(ValidationError, match="not a regular expression"):
        Settings(mask_patterns=["(unclosed"])
