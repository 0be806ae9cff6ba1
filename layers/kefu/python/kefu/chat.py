"""The chat turn: from a validated customer message to a persisted, answered turn."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from kefu.decision import Decision
from kefu.errors import DependencyUnavailable
from kefu.follow_up import follow_up_topic
from kefu.masking import mask_personal_data, mask_unless_given
from kefu.models import ChatRequest, ChatResponse, Outcome, Session, Source, Turn
from kefu.observability import logger
from kefu.order_tools import INTENTS, NOT_FOUND, ORDERS_DOWN, describe, order_id_in, topic_of
from kefu.ports import AnswerContext, ChatModel, OrderSystem, SessionStore
from kefu.replies import (
    AI_DISCLOSURE,
    DECLINE,
    HANDOVER,
    MODEL_DOWN,
    RETRIEVAL_DOWN,
    asks_for_human,
)
from kefu.retrieval import Retriever
from kefu.small_talk import APOLOGY, HUMAN_OFFER, REPLIES, SmallTalk, small_talk, sounds_upset
from kefu.text import Language, detect_language

# Short-term memory handed to the model: the last turns of the conversation.
HISTORY_WINDOW = 10


def new_id() -> str:
    return uuid.uuid4().hex


class ChatService:
    """Answers one customer message within its conversation."""

    def __init__(
        self,
        *,
        retriever: Retriever,
        model: ChatModel,
        sessions: SessionStore,
        orders: OrderSystem | None = None,
        tenant: str = "default",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.retriever = retriever
        self.model = model
        self.sessions = sessions
        self.orders = orders
        self.tenant = tenant
        self.clock = clock

    def handle(self, request: ChatRequest) -> ChatResponse:
        session_id = request.session_id or new_id()
        try:
            session = self.sessions.get(session_id) or Session(session_id=session_id)
        except DependencyUnavailable:
            # Without its memory the turn is still answered; the conversation just restarts.
            logger.exception("session store unavailable; answering without the conversation")
            session = Session(session_id=session_id)
        language: Language = request.language or detect_language(request.message)
        first_turn = not session.turns
        # What is stored, logged or sent to a model: contact details and identity numbers
        # masked. Retrieval and the order lookup read the message as it came, in memory only.
        masked = mask_personal_data(request.message, language=language)

        # "Are you a real person?" is a question about the agent, not a request for one.
        chatter = small_talk(request.message)
        if chatter == "identity" or (chatter and not asks_for_human(request.message)):
            response = self._small_talk(session_id, language, chatter)
        elif asks_for_human(request.message):
            response = self._hand_over(session_id, language)
        elif self.orders is not None and (order_id := order_id_in(request.message)):
            response = self._order(session_id, order_id, request.message, language)
        else:
            response = self._answer(session, request.message, masked, language)
            if sounds_upset(request.message):
                response = _offering_a_human(response, language)

        if first_turn:
            response = response.model_copy(
                update={"answer": f"{AI_DISCLOSURE[language]}\n\n{response.answer}"}
            )
        turn = Turn(
            turn_id=response.turn_id,
            message=masked,
            answer=response.answer,
            language=language,
            outcome=response.outcome,
            intent=response.intent,
            at=self.clock(),
            sources=tuple(source.id for source in response.sources),
        )
        handed_over = session.handed_over or response.outcome == "handed_over"
        try:
            self.sessions.append(session_id, turn, handed_over=handed_over)
        except DependencyUnavailable:
            # The customer still gets the answer, and the turn survives in the log (contact
            # details masked) for the conversation to be restored from.
            logger.exception(
                "session store unavailable; turn not stored",
                extra={
                    "session_id": session_id,
                    "turn_id": turn.turn_id,
                    "unstored_message": turn.message,
                    "unstored_answer": turn.answer,
                    "outcome": turn.outcome,
                    "handed_over": handed_over,
                    "at": turn.at.isoformat(),
                },
            )
        logger.info(
            "chat turn",
            extra={
                "session_id": session_id,
                "turn_id": turn.turn_id,
                "outcome": turn.outcome,
                "intent": turn.intent,
                "language": language,
                "confidence": response.confidence,
            },
        )
        return response

    def _hand_over(self, session_id: str, language: Language) -> ChatResponse:
        return _reply(session_id, language, HANDOVER[language], "human_agent", "handed_over")

    def _small_talk(self, session_id: str, language: Language, kind: SmallTalk) -> ChatResponse:
        return _reply(session_id, language, REPLIES[kind][language], "small_talk", "answered")

    def _order(
        self, session_id: str, order_id: str, message: str, language: Language
    ) -> ChatResponse:
        """The order tools: what the order system says about the order the customer named."""
        assert self.orders is not None
        topic = topic_of(message)
        try:
            order = self.orders.find(order_id)
        except DependencyUnavailable:
            logger.exception("order system unavailable; declining with a hand-over offer")
            return _declined(session_id, language, ORDERS_DOWN)
        if order is None:
            answer = NOT_FOUND[language].format(order_id=order_id)
            return _reply(session_id, language, answer, INTENTS[topic], "declined", "orders", 0.0)
        answer = describe(order, topic, language)
        return _reply(session_id, language, answer, INTENTS[topic], "answered", "orders")

    def _answer(
        self, session: Session, message: str, masked: str, language: Language
    ) -> ChatResponse:
        """`message` is retrieved for; the model is given `masked`."""
        turn_id = new_id()
        try:
            # A follow-up is answered within the conversation's topic where it can be.
            decision = self.retriever.decide(
                message,
                language=language,
                tenant=self.tenant,
                topic=follow_up_topic(message, session.turns),
            )
        except DependencyUnavailable:
            logger.exception("retrieval unavailable; declining with a hand-over offer")
            return _declined(session.session_id, language, RETRIEVAL_DOWN)

        sources = _sources(decision)
        if decision.kind == "decline":
            answer, model_name, intent = DECLINE[language], "rules", "unknown"
        elif decision.kind == "faq":
            best = decision.hits[0].chunk
            answer, model_name, intent = best.text, "faq", best.category or "general"
        else:
            context = AnswerContext(
                question=masked,
                language=language,
                hits=decision.hits,
                history=session.turns[-HISTORY_WINDOW:],
            )
            try:
                reply = self.model.answer(context)
            except DependencyUnavailable:
                # No confident FAQ entry to fall back on (it would have answered directly).
                logger.exception("chat model unavailable; declining with a hand-over offer")
                return _declined(session.session_id, language, MODEL_DOWN, decision.confidence)
            # Contact details the model wrote that neither the customer nor a source gave.
            given = [message, *(hit.chunk.text for hit in decision.hits)]
            answer = mask_unless_given(reply.text, given, language=language)
            model_name = reply.model
            intent = decision.hits[0].chunk.category or "general"
        return ChatResponse(
            session_id=session.session_id,
            turn_id=turn_id,
            answer=answer,
            language=language,
            sources=[] if decision.kind == "decline" else sources,
            intent=intent,
            confidence=decision.confidence,
            outcome="declined" if decision.kind == "decline" else "answered",
            model=model_name,
        )


def _reply(
    session_id: str,
    language: Language,
    answer: str,
    intent: str,
    outcome: Outcome,
    model: str = "rules",
    confidence: float = 1.0,
) -> ChatResponse:
    """A turn answered without retrieval (rules, the order system)."""
    return ChatResponse(
        session_id=session_id,
        turn_id=new_id(),
        answer=answer,
        language=language,
        sources=[],
        intent=intent,
        confidence=confidence,
        outcome=outcome,
        model=model,
    )


def _declined(
    session_id: str, language: Language, reply: dict[Language, str], confidence: float = 0.0
) -> ChatResponse:
    """A turn declined because a dependency failed: the customer is offered a human."""
    return _reply(session_id, language, reply[language], "unknown", "declined", "rules", confidence)


def _offering_a_human(response: ChatResponse, language: Language) -> ChatResponse:
    """An upset customer's answer: an apology first, and a human offered at once (a decline
    offers one already)."""
    if response.outcome == "declined":
        answer = f"{APOLOGY[language]}{response.answer}"
    else:
        answer = f"{APOLOGY[language]}{HUMAN_OFFER[language]}\n\n{response.answer}"
    return response.model_copy(update={"answer": answer})


def _sources(decision: Decision) -> list[Source]:
    return [
        Source(id=hit.chunk.id, title=hit.chunk.title, score=round(hit.score, 4))
        for hit in decision.hits
    ]
