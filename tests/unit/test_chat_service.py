from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kefu.adapters.extractive import ExtractiveModel
from kefu.adapters.sessions import SqliteSessionStore
from kefu.chat import ChatService
from kefu.errors import DependencyUnavailable
from kefu.models import ChatRequest
from kefu.replies import AI_DISCLOSURE, DECLINE, HANDOVER, RETRIEVAL_DOWN


def ask(service: ChatService, message: str, **kwargs: Any):
    return service.handle(ChatRequest(message=message, **kwargs))


def test_an_english_question_is_answered_from_the_matching_faq(chat_service: ChatService) -> None:
    reply = ask(chat_service, "How long does a refund take?")
    assert reply.outcome == "answered"
    assert reply.sources[0].id == "refund-01-en"
    assert reply.answer.endswith("after the warehouse checks the return.")
    assert reply.language == "en"
    assert reply.intent == "refunds"
    assert reply.model == "faq"


def test_a_chinese_question_is_answered_in_chinese(chat_service: ChatService) -> None:
    reply = ask(chat_service, "退款多久到账？")
    assert reply.outcome == "answered"
    assert reply.sources[0].id == "refund-01-zh"
    assert reply.language == "zh"
    assert "1–3 个工作日" in reply.answer


def test_the_first_answer_discloses_the_ai_and_a_follow_up_does_not(
    chat_service: ChatService,
) -> None:
    first = ask(chat_service, "忘记密码了")
    assert first.answer.startswith(AI_DISCLOSURE["zh"])
    follow_up = ask(chat_service, "快递几天到", session_id=first.session_id)
    assert follow_up.session_id == first.session_id
    assert not follow_up.answer.startswith(AI_DISCLOSURE["zh"])
    assert follow_up.sources[0].id == "ship-01-zh"


def test_the_conversation_is_remembered_turn_by_turn(chat_service: ChatService) -> None:
    first = ask(chat_service, "forgot my password")
    ask(chat_service, "when will my parcel arrive", session_id=first.session_id)
    session = chat_service.sessions.get(first.session_id)
    assert session is not None
    assert [turn.message for turn in session.turns] == [
        "forgot my password",
        "when will my parcel arrive",
    ]
    assert session.turns[0].sources[0] == "account-01-en"


def test_a_first_message_starts_a_conversation_under_an_id_the_service_makes(
    chat_service: ChatService,
) -> None:
    first = ask(chat_service, "forgot my password")
    assert first.new_session is True
    follow_up = ask(chat_service, "when will my parcel arrive", session_id=first.session_id)
    assert (follow_up.session_id, follow_up.new_session) == (first.session_id, False)


def test_a_session_id_the_client_made_up_starts_a_new_conversation_under_a_new_id(
    chat_service: ChatService,
) -> None:
    # Given a client that names a session the service never issued
    reply = ask(chat_service, "forgot my password", session_id="client-chosen-id-1")

    # Then the answer starts a conversation of the service's own, and says so
    assert reply.new_session is True
    assert reply.session_id != "client-chosen-id-1"
    assert reply.answer.startswith(AI_DISCLOSURE["en"])
    # And no session was created under the client's id; the new one holds the turn
    assert chat_service.sessions.get("client-chosen-id-1") is None
    stored = chat_service.sessions.get(reply.session_id)
    assert stored is not None
    assert [turn.message for turn in stored.turns] == ["forgot my password"]
    # And sending the made-up id again starts yet another one, never that id
    again = ask(chat_service, "forgot my password", session_id="client-chosen-id-1")
    assert again.new_session is True
    assert again.session_id not in ("client-chosen-id-1", reply.session_id)
    assert chat_service.sessions.get("client-chosen-id-1") is None


def test_an_expired_session_starts_a_new_conversation_under_a_new_id(retriever: Any) -> None:
    # Given a conversation whose session outlives its time to live
    now = [datetime(2026, 12, 1, 9, 0, tzinfo=UTC)]
    sessions = SqliteSessionStore(":memory:", ttl=timedelta(hours=72), clock=lambda: now[0])
    service = ChatService(retriever=retriever, model=ExtractiveModel(), sessions=sessions)
    first = ask(service, "forgot my password")
    now[0] += timedelta(hours=71)
    kept = ask(service, "when will my parcel arrive", session_id=first.session_id)
    assert (kept.session_id, kept.new_session) == (first.session_id, False)

    # When the customer writes again 72 hours after the last message
    now[0] += timedelta(hours=72)
    later = ask(service, "when will my parcel arrive", session_id=first.session_id)

    # Then the conversation starts again, under a new id, with the AI disclosed again
    assert later.new_session is True
    assert later.session_id != first.session_id
    assert later.answer.startswith(AI_DISCLOSURE["en"])
    assert sessions.get(first.session_id) is None


class _SessionsReadDown:
    """A store whose reads fail while its writes work (a read throttled, say)."""

    def __init__(self) -> None:
        self.store = SqliteSessionStore(":memory:")
        self.reads_fail = False

    def get(self, session_id: str) -> Any:
        if self.reads_fail:
            self.reads_fail = False  # the next read (the save's check) works
            raise DependencyUnavailable("sessions read throttled")
        return self.store.get(session_id)

    def save(self, session: Any) -> None:
        self.store.save(session)


def test_when_the_session_cannot_be_read_a_made_up_id_is_still_never_created(
    retriever: Any,
) -> None:
    sessions = _SessionsReadDown()
    service = ChatService(retriever=retriever, model=ExtractiveModel(), sessions=sessions)
    first = ask(service, "forgot my password")

    # When the read of a turn's session fails, for a real session and for a made-up one
    sessions.reads_fail = True
    known = ask(service, "when will my parcel arrive", session_id=first.session_id)
    sessions.reads_fail = True
    made_up = ask(service, "when will my parcel arrive", session_id="client-chosen-id-2")

    # Then both are answered; the real session keeps the turn; the made-up id names nothing
    assert known.outcome == made_up.outcome == "answered"
    stored = sessions.store.get(first.session_id)
    assert stored is not None
    assert [turn.turn_id for turn in stored.turns][-1] == known.turn_id
    assert sessions.store.get("client-chosen-id-2") is None


def test_an_uncovered_question_is_declined_with_a_human_offered(chat_service: ChatService) -> None:
    reply = ask(chat_service, "Write me a poem about the sea")
    assert reply.outcome == "declined"
    assert reply.sources == []
    assert reply.answer.endswith(DECLINE["en"])
    assert "human" in reply.answer


def test_asking_for_a_human_hands_over_in_either_language(chat_service: ChatService) -> None:
    for message, language in (("转人工", "zh"), ("I want to talk to a real person", "en")):
        reply = ask(chat_service, message)
        assert reply.outcome == "handed_over"
        assert reply.answer.endswith(HANDOVER[language])
        session = chat_service.sessions.get(reply.session_id)
        assert session is not None
        assert session.handed_over


def test_a_question_only_a_policy_document_covers_is_answered_from_its_passage(
    chat_service: ChatService,
) -> None:
    reply = ask(chat_service, "Is damage from water or drops covered under warranty?")
    assert reply.outcome == "answered"
    assert reply.sources[0].id == "mini-policy.en.md#002"
    assert reply.model == "extractive"
    assert "Warranty Policy · Not covered" in reply.answer


def test_the_requested_language_overrides_detection(chat_service: ChatService) -> None:
    reply = ask(chat_service, "refund timing", language="zh")
    assert reply.language == "zh"
    assert reply.answer.startswith(AI_DISCLOSURE["zh"])


class _BrokenIndex:
    version = "0"

    def search(self, query: Any) -> Any:
        raise DependencyUnavailable("index down")

    def load_head(self, tenant: str) -> Any:
        raise DependencyUnavailable("index down")


def test_retrieval_down_degrades_to_an_apology_and_keeps_the_message(retriever: Any) -> None:
    retriever.index = _BrokenIndex()
    sessions = SqliteSessionStore(":memory:")
    service = ChatService(
        retriever=retriever,
        model=ExtractiveModel(),
        sessions=sessions,
        clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
    )
    reply = ask(service, "How long does a refund take?")
    assert reply.outcome == "declined"
    assert reply.answer.endswith(RETRIEVAL_DOWN["en"])
    stored = sessions.get(reply.session_id)
    assert stored is not None
    assert stored.turns[0].message == "How long does a refund take?"


class _BrokenSessions:
    def get(self, session_id: str) -> Any:
        raise DependencyUnavailable("sessions down")

    def save(self, session: Any) -> None:
        raise DependencyUnavailable("sessions down")


def test_a_session_store_outage_still_answers_and_logs_the_turn(
    retriever: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kefu.chat

    records: list[tuple[str, dict[str, Any]]] = []

    class _Recorder:
        def exception(self, message: str, *, extra: dict[str, Any] | None = None) -> None:
            records.append((message, extra or {}))

        def info(self, message: str, *, extra: dict[str, Any] | None = None) -> None:
            records.append((message, extra or {}))

    monkeypatch.setattr(kefu.chat, "logger", _Recorder())
    service = ChatService(retriever=retriever, model=ExtractiveModel(), sessions=_BrokenSessions())
    reply = ask(service, "How long does a refund take? call me on 13812345678")
    assert reply.outcome == "answered"
    [unstored] = [extra for message, extra in records if message.endswith("turn not stored")]
    assert unstored["turn_id"] == reply.turn_id
    assert unstored["unstored_message"] == "How long does a refund take? call me on [phone]"
    assert unstored["unstored_answer"] == reply.answer
