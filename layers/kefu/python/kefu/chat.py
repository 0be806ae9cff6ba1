"""The chat turn: from a validated customer message to a remembered, answered turn."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import ValidationError

from kefu.answer_cache import CachedAnswer, cache_key, cacheable
from kefu.decision import confidence
from kefu.errors import DependencyUnavailable, SessionNotFound, TicketNotFound
from kefu.follow_up import follow_up_of
from kefu.handover import HandoverDesk, complaint_kind
from kefu.masking import mask_personal_data, mask_unless_given
from kefu.memory import Memory, carried_intent, carried_slots
from kefu.models import (
    ChatRequest,
    ChatResponse,
    FeedbackRequest,
    FeedbackResponse,
    Handover,
    Outcome,
    SearchHit,
    Session,
    Source,
    Turn,
)
from kefu.observability import MetricUnit, emit, logger
from kefu.order_tools import (
    INTENTS,
    NOT_FOUND,
    ORDER_ID,
    ORDERS_DOWN,
    OrderTools,
    describe,
    topic_of,
)
from kefu.ports import (
    AnswerCache,
    AnswerContext,
    ChatModel,
    ConversationModel,
    Insights,
    ModelAnswer,
    OrderSystem,
    SessionConflict,
    SessionStore,
)
from kefu.replies import (
    AI_DISCLOSURE,
    DECLINE,
    HANDED_OVER,
    HANDOVER,
    HUMAN_WILL_REPLY,
    MODEL_DOWN,
    MODEL_DOWN_HANDED_OVER,
    RETRIEVAL_DOWN,
    STILL_NOT_FOUND,
    asks_for_human,
)
from kefu.retrieval import Retriever
from kefu.return_flow import ASK_ORDER, product_of, return_step, slots_in, wants_return
from kefu.small_talk import APOLOGY, HUMAN_OFFER, REPLIES, SmallTalk, small_talk, sounds_upset
from kefu.text import Language, detect_language
from kefu.tickets import FeedbackRecord, Ticket, Trigger, TurnRecord

if TYPE_CHECKING:
    from kefu.ports import Vectors

# Embeds a message while its session is read (the first two calls of a turn, independent).
_PREFETCH = ThreadPoolExecutor(max_workers=4, thread_name_prefix="kefu-prefetch")
# How many times a turn is re-applied when another request saved the session meanwhile.
SAVE_ATTEMPTS = 3
# A turn that has taken this long leaves the summary to the extractive fold: the model's would
# take it past API Gateway's 29 seconds.
SUMMARY_WITHIN_SECONDS = 15.0
# API Gateway gives a turn 29 s; the model's tool rounds must leave the rest of the turn time.
TURN_SECONDS = 26.0
# How long a turn waits for the same question's answer from another conversation's turn.
ASKED_AT_ONCE_WAIT_SECONDS = 10.0
# The running turn's deadline (per thread: the local server answers turns concurrently).
_TURN_DEADLINE: ContextVar[float | None] = ContextVar("kefu_turn_deadline", default=None)
# "Where is it now?", "我的快递到哪了": a question about the order the conversation is about.
_ABOUT_THE_ORDER = re.compile(r"我的|这个|那个|该|它|\b(my|it|this|that|the order)\b", re.I)


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class _Answer:
    """What answering a message produced: the response (its intent the turn's own), the
    slots it established beyond those the message gave, and whether the model failed with
    nothing to answer instead."""

    response: ChatResponse
    slots: dict[str, str] = field(default_factory=dict)
    model_failed: bool = False
    # For a declined question: the KB category it came nearest to (the knowledge-gap report).
    category: str = ""
    # The knowledge-base texts the answer was built from: their contact details (a hotline, a
    # service e-mail) are the business's own and are stored as written; any other is masked.
    # None for a cached answer: the cache keeps answers to questions that masking left as
    # they were, built from the knowledge base alone; it is stored as it is.
    grounds: tuple[str, ...] | None = ()


@dataclass(frozen=True, slots=True)
class _HandoverState:
    """What a turn changes of the session's hand-over state: the consecutive failures after
    it, the ticket it opened (None: none), and whether it escalated the session."""

    failures: int
    ticket_id: str | None = None
    escalated: bool = False


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
        memory: Memory | None = None,
        mask_patterns: Sequence[re.Pattern[str]] = (),
        desk: HandoverDesk | None = None,
        insights: Insights | None = None,
        cache: AnswerCache | None = None,
        cache_ttl_seconds: int = 3600,
        handover_after_failures: int = 2,
        low_confidence: float = 0.35,
    ) -> None:
        self.retriever = retriever
        self.model = model
        self.sessions = sessions
        self.tools = OrderTools(orders) if orders is not None else None
        self.tenant = tenant
        self.clock = clock
        # A language model resolves follow-ups and summarises; the extractive one cannot.
        self.conversational = model if isinstance(model, ConversationModel) else None
        self.memory = memory or Memory(summarizer=self.conversational)
        self.mask_patterns = tuple(mask_patterns)
        # Without a desk a hand-over is only said (no ticket, no human sees it).
        self.desk = desk
        self.insights = insights
        # Answers to questions that stand alone, for the next customer who asks them.
        self.cache = cache
        self.cache_ttl_seconds = cache_ttl_seconds
        # The cache keys being answered now (a question asked in several conversations at once).
        self._asking: dict[str, threading.Event] = {}
        self._asking_lock = threading.Lock()
        self.handover_after_failures = handover_after_failures
        self.low_confidence = low_confidence

    def handle(self, request: ChatRequest) -> ChatResponse:
        started = time.monotonic()
        _TURN_DEADLINE.set(started + TURN_SECONDS)
        message = request.message
        # A message that will likely be retrieved for is embedded while the session is read.
        prefetched: Future[Vectors] | None = None
        chatter = small_talk(message)
        if not (chatter or asks_for_human(message) or ORDER_ID.search(message)):
            prefetched = _PREFETCH.submit(self.retriever.embed, message)
        session, opened_now, unread = self._open(request.session_id)
        session_id = session.session_id
        language: Language = request.language or detect_language(request.message)
        # What is stored, logged or sent to a model: contact details and identity numbers
        # masked. Retrieval and the order lookup read the message as it came, in memory only.
        masked = mask_personal_data(request.message, language=language, extra=self.mask_patterns)
        if session.handed_over and session.ticket_id and self.desk is not None:
            with_human = self._with_human(session, masked, language)
            if with_human is not None:
                self._remember(
                    session,
                    self._turn(with_human, masked, language),
                    established={},
                    state=_HandoverState(failures=0),
                )
                self._record(session, with_human, started, masked)
                return with_human
            # Its ticket is closed (or was never written): the bot has the conversation again.
            session = replace(session, handed_over=False, ticket_id="", handed_over_at=None)
        # Slots are read from the masked text: a card or identity number is no order number.
        found = slots_in(masked)

        answered = self._respond(session, message, masked, language, found, chatter, prefetched)
        response = answered.response
        failures = self._failures_after(session, response)
        trigger = _trigger_of(message, answered, failures >= self.handover_after_failures)
        opened = None
        if trigger is not None:
            response = _handing_over(response, trigger, language)
            if self.desk is not None:
                opened = self.desk.open(
                    session_id=session_id, trigger=trigger, language=language, message=masked
                )
                response = response.model_copy(
                    update={
                        "handover": Handover(
                            trigger=trigger, ticket_id=opened.ticket_id, status="pending"
                        )
                    }
                )
        established = {**found, **answered.slots}
        intent, slots = _carried(session, response.intent, established)
        update: dict[str, object] = {
            "intent": intent or response.intent,
            "slots": slots,
            "new_session": opened_now,
        }
        if not session.turns and not session.summary:
            update["answer"] = f"{AI_DISCLOSURE[language]}\n\n{response.answer}"
        response = response.model_copy(update=update)

        # The turn's own intent: what a follow-up continues.
        turn = self._turn(
            response, masked, language, intent=answered.response.intent, grounds=answered.grounds
        )
        use_model = time.monotonic() - started < SUMMARY_WITHIN_SECONDS
        state = _HandoverState(
            failures=0 if trigger else failures,
            ticket_id=opened.ticket_id if opened else None,
            escalated=trigger is not None,
        )
        kept = self._remember(
            session,
            turn,
            established=established,
            use_model=use_model,
            state=state,
            may_create=not unread,
        )
        if opened is not None:
            response = self._queue_handover(opened, kept, masked, response)
        if trigger is not None:
            emit("HandOvers", trigger=trigger)
            if not session.escalated:
                emit("SessionsEscalated")
        self._record(
            session, response, started, masked, trigger=trigger, category=answered.category
        )
        logger.info(
            "chat turn",
            extra={
                "session_id": session_id,
                "turn_id": turn.turn_id,
                "outcome": turn.outcome,
                "intent": response.intent,
                "language": language,
                "confidence": response.confidence,
                "model": response.model,
                "handover": trigger,
            },
        )
        return response

    # --- hand-over ----------------------------------------------------------------------

    def _with_human(self, session: Session, masked: str, language: Language) -> ChatResponse | None:
        """While a human has the conversation the bot only passes messages on: the message
        joins the ticket's thread. None when the ticket is closed (the bot answers again)."""
        assert self.desk is not None
        response = _reply(
            session.session_id, language, HUMAN_WILL_REPLY[language], "human_agent", "handed_over"
        )
        try:
            ticket = self.desk.pass_on(session, masked, turn_id=response.turn_id, language=language)
        except TicketNotFound:
            # Its store and the queue both failed at the hand-over: waiting for the ticket
            # would leave the customer with no one.
            logger.error(
                "the hand-over's ticket was never written; the bot answers again",
                extra={"session_id": session.session_id, "ticket_id": session.ticket_id},
            )
            return None
        if ticket is None:
            return response  # on its way to the ticket by the queue; kept in the session too
        if ticket.status == "closed":
            return None
        handover = Handover(
            trigger=ticket.trigger, ticket_id=ticket.ticket_id, status=ticket.status
        )
        return response.model_copy(update={"handover": handover})

    def _queue_handover(
        self, opened: Ticket, kept: str | None, masked: str, response: ChatResponse
    ) -> ChatResponse:
        """Queue the ticket this turn opened, once the session holds the turn (the escalation
        function reads it there); unless another message of the session handed over at the
        same moment: its ticket, `kept`, has the conversation, and this message joins it."""
        assert self.desk is not None
        if kept and kept != opened.ticket_id:
            ticket = self.desk.merge(opened, into=kept, message=masked, turn_id=response.turn_id)
            if ticket is not None:
                handover = Handover(trigger=ticket.trigger, ticket_id=kept, status=ticket.status)
                return response.model_copy(update={"handover": handover})
            # That ticket is closed (or out of reach): this one takes the conversation.
            self._attach(opened)
        self.desk.dispatch(opened, masked)
        return response

    def _attach(self, ticket: Ticket) -> None:
        """Point the session at `ticket`, the one a human now has it on."""
        for _ in range(SAVE_ATTEMPTS):
            try:
                session = self._load(ticket.session_id)
                self.sessions.save(
                    replace(
                        session,
                        handed_over=True,
                        ticket_id=ticket.ticket_id,
                        handed_over_at=ticket.created_at,
                    )
                )
                return
            except SessionConflict:
                continue
            except DependencyUnavailable:
                break
        logger.error(
            "the session could not be pointed at its ticket",
            extra={"session_id": ticket.session_id, "ticket_id": ticket.ticket_id},
        )

    def _failures_after(self, session: Session, response: ChatResponse) -> int:
        """The consecutive declined or unsure answers after this one. Small talk neither
        counts nor breaks the run."""
        if response.intent in ("small_talk", "human_agent"):
            return session.failures
        unsure = response.outcome == "answered" and response.confidence < self.low_confidence
        return session.failures + 1 if response.outcome == "declined" or unsure else 0

    def feedback(self, request: FeedbackRequest) -> FeedbackResponse:
        """Record a rating; one below 3 hands the conversation to a human."""
        session = self.sessions.get(request.session_id)
        if session is None:
            raise SessionNotFound(request.session_id)
        language: Language = session.turns[-1].language if session.turns else "zh"
        comment = (
            mask_personal_data(request.comment, language=language, extra=self.mask_patterns)
            if request.comment
            else ""
        )
        now = self.clock()
        if self.insights is not None:
            try:
                self.insights.record_feedback(
                    FeedbackRecord(
                        session_id=session.session_id,
                        at=now,
                        tenant=self.tenant,
                        rating=request.rating,
                        turn_id=request.turn_id or "",
                        comment=comment,
                    )
                )
            except DependencyUnavailable:
                logger.exception(
                    "insights unavailable; rating not recorded",
                    extra={"session_id": session.session_id, "rating": request.rating},
                )
        emit("Ratings", request.rating, unit=MetricUnit.Count)
        emit("RatingsGiven")
        if request.rating >= 4:
            emit("RatingsSatisfied")
        if request.rating >= 3:
            return FeedbackResponse(session_id=session.session_id, rating=request.rating)
        if not session.escalated:
            emit("SessionsEscalated")
        handover = self._escalate_rated(session, comment, language, request)
        return FeedbackResponse(
            session_id=session.session_id, rating=request.rating, handover=handover
        )

    def _escalate_rated(
        self, session: Session, comment: str, language: Language, request: FeedbackRequest
    ) -> Handover | None:
        """A rating below 3: the session goes to a human, unless one has it already (then the
        rating and its comment join that ticket's thread, once however often it is sent)."""
        if session.handed_over and session.ticket_id and self.desk is not None:
            rated = f"[{request.rating}/5] {comment}".strip()
            # The same rating sent again (a client's retry) joins the thread once.
            sent = f"{request.turn_id}|{request.rating}|{comment}".encode()
            rating_id = f"rating-{hashlib.sha256(sent).hexdigest()[:24]}"
            try:
                ticket = self.desk.pass_on(session, rated, turn_id=rating_id, language=language)
            except TicketNotFound:
                ticket = None  # never written: this rating opens a ticket of its own
            else:
                if ticket is None:
                    return None  # on its way to the ticket by the queue
                if ticket.status != "closed":
                    return Handover(
                        trigger=ticket.trigger, ticket_id=ticket.ticket_id, status=ticket.status
                    )
        opened = (
            self.desk.open(
                session_id=session.session_id,
                trigger="low_rating",
                language=language,
                message=comment,
            )
            if self.desk is not None
            else None
        )
        for _ in range(SAVE_ATTEMPTS):
            changed = replace(
                session,
                handed_over=opened is not None or session.handed_over,
                ticket_id=opened.ticket_id if opened else session.ticket_id,
                handed_over_at=self.clock() if opened else session.handed_over_at,
                escalated=True,
            )
            try:
                self.sessions.save(changed)
                break
            except SessionConflict:
                session = self._load(session.session_id)
            except DependencyUnavailable:
                logger.exception("session store unavailable; the ticket still has the rating")
                break
        emit("HandOvers", trigger="low_rating")
        if opened is None or self.desk is None:
            return None
        self.desk.dispatch(opened, comment)
        return Handover(trigger="low_rating", ticket_id=opened.ticket_id, status="pending")

    def _record(
        self,
        session: Session,
        response: ChatResponse,
        started: float,
        masked: str,
        *,
        trigger: Trigger | None = None,
        category: str = "",
    ) -> None:
        """The turn's record for the reports, and its metrics. Never fails the turn. A
        declined question is kept (masked) with `category`, the KB category it came nearest
        to, or the conversation's."""
        latency_ms = (time.monotonic() - started) * 1000
        first_turn = session.turn_count == 0 and not session.turns
        emit("ResponseTime", latency_ms, unit=MetricUnit.Milliseconds)
        if first_turn:
            emit("SessionsStarted")
        if self.insights is None:
            return
        declined = response.outcome == "declined"
        record = TurnRecord(
            session_id=response.session_id,
            turn_id=response.turn_id,
            at=self.clock(),
            tenant=self.tenant,
            language=response.language,
            outcome=response.outcome,
            intent=response.intent,
            latency_ms=round(latency_ms, 1),
            first_turn=first_turn,
            handover_trigger=trigger or "",
            question=masked if declined else "",
            category=(category or session.intent) if declined else "",
        )
        try:
            self.insights.record_turn(record)
        except DependencyUnavailable:
            logger.exception("insights unavailable; turn not recorded")

    # --- memory -------------------------------------------------------------------------

    def _open(self, asked: str | None) -> tuple[Session, bool, bool]:
        """The conversation a turn belongs to; whether the turn starts it; and whether the
        store could not be read. Sessions are the service's: a session id the store does not
        know (never issued, or expired) starts a new conversation under a new id, never one
        under the id the client sent. When the store cannot be read the turn is answered
        within the session asked for, unread (it is saved only if that session exists)."""
        if asked is None:
            return Session(session_id=new_id()), True, False
        try:
            stored = self.sessions.get(asked)
        except DependencyUnavailable:
            # Without its memory the turn is still answered; the conversation just restarts.
            logger.exception("session store unavailable; answering without the conversation")
            return Session(session_id=asked), False, True
        if stored is None:
            logger.info("unknown or expired session; a new one starts", extra={"asked": asked})
            return Session(session_id=new_id()), True, False
        return stored, False, False

    def _turn(
        self,
        response: ChatResponse,
        masked: str,
        language: Language,
        *,
        intent: str | None = None,
        grounds: Sequence[str] | None = (),
    ) -> Turn:
        """The turn as it is stored: the masked message, and the answer with every contact
        detail and identity number masked but those its knowledge-base `grounds` wrote. The
        customer's own, which an answer may repeat to them (from an order record the model
        looked up, say), are in the response only. `grounds` None: the answer is stored as it
        is (a cached answer, built from the knowledge base alone)."""
        answer = (
            response.answer
            if grounds is None
            else mask_unless_given(
                response.answer, grounds, language=language, extra=self.mask_patterns
            )
        )
        return Turn(
            turn_id=response.turn_id,
            message=masked,
            answer=answer,
            language=language,
            outcome=response.outcome,
            intent=response.intent if intent is None else intent,
            at=self.clock(),
            sources=tuple(source.id for source in response.sources),
        )

    def _load(self, session_id: str) -> Session:
        try:
            return self.sessions.get(session_id) or Session(session_id=session_id)
        except DependencyUnavailable:
            # Without its memory the turn is still answered; the conversation just restarts.
            logger.exception("session store unavailable; answering without the conversation")
            return Session(session_id=session_id)

    def _remember(
        self,
        session: Session,
        turn: Turn,
        *,
        established: Mapping[str, str],
        use_model: bool = True,
        state: _HandoverState,
        may_create: bool = True,
    ) -> str | None:
        """Save the session with `turn`; on a conflict, read it again and apply the turn (its
        intent, the slots it `established` and its hand-over `state`) to what the other
        request saved (an agent may have closed the ticket meanwhile, or another message
        handed over first: its ticket keeps the conversation). Without `may_create` (the
        session was asked for by a client but could not be read) the turn joins the session
        only if it exists. Returns the ticket the saved session is with ("" for none), or
        None when it could not be saved."""
        intent, slots = _carried(session, turn.intent, established)
        unstored = "session store unavailable; turn not stored"
        for _ in range(SAVE_ATTEMPTS):
            if session.version == 0 and not may_create:
                # A save now would create the session under the id the client sent.
                try:
                    known = self.sessions.get(session.session_id)
                except DependencyUnavailable:
                    break
                if known is None:
                    unstored = "the session asked for is unknown; turn not stored"
                    break
                session, may_create = known, True
                intent, slots = _carried(session, turn.intent, established)
                use_model = False
            handed_over = bool(state.ticket_id) or session.handed_over
            if self.desk is None and turn.outcome == "handed_over":
                handed_over = True
            updated = self.memory.remember(
                session,
                turn,
                intent=intent,
                slots=slots,
                handed_over=handed_over,
                use_model=use_model,
            )
            updated = replace(
                updated,
                ticket_id=state.ticket_id or session.ticket_id,
                handed_over_at=turn.at if state.ticket_id else session.handed_over_at,
                failures=state.failures,
                escalated=session.escalated or state.escalated,
            )
            try:
                self.sessions.save(updated)
                return updated.ticket_id
            except SessionConflict:
                # Another message of this session was answered meanwhile: add this turn to it.
                session = self._load(session.session_id)
                if any(stored.turn_id == turn.turn_id for stored in session.turns):
                    return session.ticket_id  # a save that timed out had landed
                if state.ticket_id and session.handed_over and session.ticket_id:
                    state = replace(state, ticket_id=None)  # the other hand-over came first
                intent, slots = _carried(session, turn.intent, established)
                use_model = False  # the summary of a retry is not worth another model call
            except DependencyUnavailable:
                break
        # The customer still gets the answer, and the turn survives in the log (contact
        # details masked) for the conversation to be restored from.
        logger.exception(
            unstored,
            extra={
                "session_id": session.session_id,
                "turn_id": turn.turn_id,
                "unstored_message": turn.message,
                "unstored_answer": turn.answer,
                "outcome": turn.outcome,
                "intent": intent,
                "slots": slots,
                "ticket_id": state.ticket_id or session.ticket_id,
                "at": turn.at.isoformat(),
            },
        )
        return None

    # --- answering ----------------------------------------------------------------------

    def _respond(
        self,
        session: Session,
        message: str,
        masked: str,
        language: Language,
        found: Mapping[str, str],
        chatter: SmallTalk | None,
        prefetched: Future[Vectors] | None = None,
    ) -> _Answer:
        sid = session.session_id
        # "Are you a real person?" is a question about the agent, not a request for one.
        if chatter in ("thanks", "goodbye") and (found or wants_return(message)):
            chatter = None  # "thanks, it's too small": a reason, not a closing
        if chatter in ("identity", "contact") or (chatter and not asks_for_human(message)):
            return _Answer(self._small_talk(sid, language, chatter))
        if asks_for_human(message):
            return _Answer(_reply(sid, language, HANDOVER[language], "human_agent", "handed_over"))
        if self.tools is not None:
            if step := self._return_flow(session, message, language, found):
                return self._upset_aware(step, message, language)
            order_id = found.get("order_id") or self._order_in_question(session, message)
            if order_id:
                answered = self._order(session, order_id, message, masked, language)
                return self._upset_aware(answered, message, language)
        answered = self._answer(session, message, masked, language, prefetched)
        response = answered.response
        if self.tools is not None and wants_return(message) and "order_id" not in session.slots:
            # The start of a return: the policy if the KB has it, and what the flow needs next.
            if response.outcome == "answered" and response.intent == "returns":
                answer = f"{response.answer}\n\n{ASK_ORDER[language]}"
                answered.response = response.model_copy(update={"answer": answer})
            elif response.outcome == "declined":
                # The message's vector, when the prefetch made one (it failed: embed again).
                ready = prefetched and prefetched.done() and prefetched.exception() is None
                vector = prefetched.result() if prefetched and ready else None
                answered = self._start_return(session, message, language, vector)
        return self._upset_aware(answered, message, language)

    def _start_return(
        self, session: Session, message: str, language: Language, vector: Vectors | None
    ) -> _Answer:
        """A customer who wants to return something, in words the KB does not match well
        enough: the intent is known by rule, so the returns topic's best entry on how to
        return goes with the flow's first question."""
        sid = session.session_id
        try:
            hits = self.retriever.search(
                message,
                language=language,
                tenant=self.tenant,
                limit=1,
                category="returns",
                vector=vector,
            )
        except DependencyUnavailable:
            hits = []
        if not hits or hits[0].chunk.kind != "faq":
            return _Answer(_reply(sid, language, ASK_ORDER[language], "returns", "answered"))
        answer = f"{hits[0].chunk.text}\n\n{ASK_ORDER[language]}"
        return _Answer(
            _grounded(
                sid, language, answer, "faq", hits, confidence=confidence(hits[0]), intent="returns"
            ),
            grounds=(hits[0].chunk.text,),
        )

    @staticmethod
    def _upset_aware(answered: _Answer, message: str, language: Language) -> _Answer:
        # A complaint proper or a legal threat is handed over (`_handing_over` apologises).
        if sounds_upset(message) and complaint_kind(message) is None:
            answered.response = _offering_a_human(answered.response, language)
        return answered

    def _small_talk(self, session_id: str, language: Language, kind: SmallTalk) -> ChatResponse:
        return _reply(session_id, language, REPLIES[kind][language], "small_talk", "answered")

    def _order_in_question(self, session: Session, message: str) -> str | None:
        """The conversation's order, when the message asks about "my parcel" or "its refund"."""
        order_id = session.slots.get("order_id")
        about_it = topic_of(message) in ("tracking", "refund") and _ABOUT_THE_ORDER.search(message)
        return order_id if order_id and about_it else None

    def _return_flow(
        self, session: Session, message: str, language: Language, found: Mapping[str, str]
    ) -> _Answer | None:
        """The guided return's next step, when the message moves one on: an order number in a
        return, or the reason once the order is known."""
        assert self.tools is not None
        in_return = session.intent == "returns"
        topic = topic_of(message)
        order_id = found.get("order_id")
        if order_id and (topic == "return" or (in_return and topic == "status")):
            reason = found.get("reason") or session.slots.get("reason")
        elif (
            in_return
            and (order_id := session.slots.get("order_id"))
            and "reason" in found
            and "reason" not in session.slots
        ):
            reason = found["reason"]
        else:
            return None
        try:
            order = self.tools.lookup(order_id)
        except DependencyUnavailable:
            logger.exception("order system unavailable; declining with a hand-over offer")
            return _Answer(_declined(session.session_id, language, ORDERS_DOWN))
        answer = return_step(order, order_id, reason, language)
        outcome: Outcome = "answered" if order is not None else "declined"
        slots = {"product": product_of(order)} if order is not None else {}
        return _Answer(
            _reply(session.session_id, language, answer, "returns", outcome, "orders"), slots
        )

    def _order(
        self, session: Session, order_id: str, message: str, masked: str, language: Language
    ) -> _Answer:
        """The order tools: what the order system says about the order the customer named. A
        language model calls them itself; otherwise the turn looks the order up."""
        assert self.tools is not None
        tools = self.tools.for_turn()  # the model's lookups and the fallback's, made once
        topic = topic_of(message)
        intent = INTENTS[topic]
        if self.conversational is not None:
            context = AnswerContext(
                question=masked,
                language=language,
                hits=(),
                history=session.turns,
                summary=session.summary,
                facts={"intent": intent, **session.slots, "order_id": order_id},
                tools=tools,
                deadline=_TURN_DEADLINE.get(),
            )
            try:
                reply = self.model.answer(context)
                given = [message, *(json.dumps(r, ensure_ascii=False) for r in tools.results)]
                answer = mask_unless_given(
                    reply.text, given, language=language, extra=self.mask_patterns
                )
                response = _reply(
                    session.session_id, language, answer, intent, "answered", reply.model
                )
                return _Answer(response)
            except DependencyUnavailable:
                logger.exception("chat model unavailable; looking the order up without it")
        try:
            order = tools.lookup(order_id)
        except DependencyUnavailable:
            logger.exception("order system unavailable; declining with a hand-over offer")
            return _Answer(_declined(session.session_id, language, ORDERS_DOWN))
        sid = session.session_id
        if order is None:
            answer = NOT_FOUND[language].format(order_id=order_id)
            return _Answer(_reply(sid, language, answer, intent, "declined", "orders", 0.0))
        answer = describe(order, topic, language)
        return _Answer(
            _reply(sid, language, answer, intent, "answered", "orders"),
            {"product": product_of(order)},
        )

    def _answer(
        self,
        session: Session,
        message: str,
        masked: str,
        language: Language,
        prefetched: Future[Vectors] | None = None,
    ) -> _Answer:
        """`message` is retrieved for (its vector `prefetched` if it was); the model is given
        `masked`."""
        sid = session.session_id
        # A follow-up is resolved against the conversation: a language model rewrites it into
        # a standalone question; either way it is retrieved within the conversation's topic.
        follow_up = follow_up_of(message, session.turns)
        topic = follow_up.topic if follow_up else None
        previous = follow_up.previous if follow_up else None
        if topic is None and wants_return(message):
            topic = "returns"  # a customer who wants to return something: how, first
        key = self._cache_key(message, masked, language, topic)
        if key is None:
            return self._retrieve(session, message, masked, language, prefetched, topic, previous)
        cached = self._cached(key, sid)
        if cached is None:
            with self._first_to_ask(key) as first:
                # Another conversation's turn was answering the same question: its answer.
                cached = None if first else self._cached(key, sid)
                if cached is None:
                    return self._retrieve(
                        session, message, masked, language, prefetched, topic, previous, key
                    )
        if prefetched is not None:
            prefetched.cancel()  # the vector is not needed: free the pool for other turns
        # Only answers built from the knowledge base alone are kept (`_keep`).
        return _Answer(cached, grounds=None)

    @contextmanager
    def _first_to_ask(self, key: str) -> Iterator[bool]:
        """Whether this turn is the first to ask the question `key` now. The same question
        asked at the same moment in other conversations is answered once: their turns wait
        (at most `ASKED_AT_ONCE_WAIT_SECONDS`) for the first one's, then read the cache."""
        with self._asking_lock:
            asked = self._asking.get(key)
            if asked is None:
                self._asking[key] = threading.Event()
        if asked is not None:
            asked.wait(ASKED_AT_ONCE_WAIT_SECONDS)
            yield False
            return
        try:
            yield True
        finally:
            with self._asking_lock:
                self._asking.pop(key).set()

    def _retrieve(
        self,
        session: Session,
        message: str,
        masked: str,
        language: Language,
        prefetched: Future[Vectors] | None,
        topic: str | None,
        previous: str | None,
        key: str | None = None,
    ) -> _Answer:
        """The answer from the knowledge base (and the model), within `topic` for a follow-up
        (`previous`: the question it follows); kept in the cache under `key` when given."""
        sid = session.session_id
        query = message
        if topic is not None and self.conversational is not None:
            try:
                query = self.conversational.standalone_question(
                    masked, session.turns, session.summary, language
                )
            except DependencyUnavailable:
                logger.exception("chat model unavailable; retrieving the follow-up as written")
        try:
            decision = self.retriever.decide(
                query,
                language=language,
                tenant=self.tenant,
                topic=topic,
                # A rewritten question stands alone; a follow-up as written is read after the
                # question it follows.
                previous=previous if query is message else None,
                vector=prefetched.result() if prefetched and query is message else None,
            )
        except DependencyUnavailable:
            logger.exception("retrieval unavailable; declining with a hand-over offer")
            return _Answer(_declined(sid, language, RETRIEVAL_DOWN))

        if decision.kind == "decline":
            nearest = (hit.chunk.category for hit in decision.hits if hit.chunk.category)
            return _Answer(
                _reply(
                    sid,
                    language,
                    DECLINE[language],
                    "unknown",
                    "declined",
                    "rules",
                    decision.confidence,
                ),
                category=next(nearest, topic or ""),
            )
        faq_answer = _grounded(
            sid,
            language,
            decision.hits[0].chunk.text,
            "faq",
            decision.hits,
            confidence=decision.confidence,
        )
        grounds = tuple(hit.chunk.text for hit in decision.hits)
        # A confident FAQ entry is the answer, unless a follow-up needs the conversation.
        if decision.kind == "faq" and (topic is None or self.conversational is None):
            self._keep(key, faq_answer)
            return _Answer(faq_answer, grounds=grounds)
        tools = self.tools.for_turn() if self.tools and self.conversational else None
        context = AnswerContext(
            question=masked,
            language=language,
            hits=decision.hits,
            history=session.turns,
            summary=session.summary,
            facts={"intent": session.intent, **session.slots} if session.intent else {},
            tools=tools,
            deadline=_TURN_DEADLINE.get(),
        )
        try:
            reply = self.model.answer(context)
        except DependencyUnavailable:
            if decision.kind == "faq":
                logger.exception("chat model unavailable; answering with the FAQ entry")
                return _Answer(faq_answer, grounds=grounds)
            logger.exception("chat model unavailable; handing over")
            return _Answer(
                _declined(sid, language, MODEL_DOWN, decision.confidence), model_failed=True
            )
        # Contact details the model wrote that neither the customer nor a source gave.
        told = [json.dumps(r, ensure_ascii=False) for r in tools.results] if tools else []
        given = [message, *grounds, *told]
        answer = mask_unless_given(reply.text, given, language=language, extra=self.mask_patterns)
        logger.info(
            "model answered",
            extra={"model": reply.model, "sources": reply.sources, "tools_used": reply.tools_used},
        )
        used = _used(reply, decision.hits)
        grounded = _grounded(
            sid,
            language,
            answer,
            reply.model,
            used,
            confidence=decision.confidence,
            # A reply that names no source still answers within the best hit's topic.
            intent=(used or decision.hits)[0].chunk.category or "general",
        )
        if not (tools and tools.results):  # an answer built from order data is never kept
            self._keep(key, grounded)
        return _Answer(grounded, grounds=grounds)

    # --- the answer cache ---------------------------------------------------------------

    def _cache_key(
        self, message: str, masked: str, language: Language, topic: str | None
    ) -> str | None:
        """The cache key of a question that stands alone (no follow-up, nothing masked, no
        order number), at the KB's version; None when the answer may not come from the cache."""
        if self.cache is None or topic is not None or masked != message:
            return None
        if ORDER_ID.search(message):
            return None
        version = self.retriever.kb_version(self.tenant)
        if version is None:
            return None
        return cache_key(
            tenant=self.tenant, language=language, kb_version=version, question=message
        )

    def _cached(self, key: str, session_id: str) -> ChatResponse | None:
        assert self.cache is not None
        try:
            value = self.cache.get(key)
        except DependencyUnavailable:
            logger.warning("answer cache unavailable; answering without it", exc_info=True)
            emit("AnswerCacheErrors")
            return None
        if value is None:
            emit("AnswerCacheMisses")
            return None
        try:
            cached = CachedAnswer.model_validate_json(value)
        except ValidationError:
            logger.warning("an unreadable cached answer is ignored", extra={"key": key})
            return None
        emit("AnswerCacheHits")
        return cached.response(session_id=session_id, turn_id=new_id())

    def _keep(self, key: str | None, response: ChatResponse) -> None:
        if key is None or self.cache is None or not cacheable(response):
            return
        try:
            value = CachedAnswer.of(response).model_dump_json().encode("utf-8")
            self.cache.put(key, value, self.cache_ttl_seconds)
        except DependencyUnavailable:
            logger.warning("answer cache unavailable; the answer is not kept", exc_info=True)
            emit("AnswerCacheErrors")


def _trigger_of(message: str, answered: _Answer, failed_repeatedly: bool) -> Trigger | None:
    """Why this turn hands the conversation to a human, if it does."""
    if answered.response.intent == "human_agent" and answered.response.outcome == "handed_over":
        return "customer_request"
    if complaint_kind(message) is not None:
        return "complaint"
    if answered.model_failed:
        return "model_failure"
    if failed_repeatedly:
        return "repeated_failure"
    return None


def _handing_over(response: ChatResponse, trigger: Trigger, language: Language) -> ChatResponse:
    """The turn's answer when it hands over: what the bot could say, and that a human will
    reply here."""
    if trigger == "customer_request":
        answer = response.answer
    elif trigger == "complaint":
        answer = f"{APOLOGY[language]}{HANDED_OVER[language]}"
        if response.outcome == "answered" and response.intent != "small_talk":
            answer = f"{answer}\n\n{response.answer}"
    elif trigger == "model_failure":
        answer = MODEL_DOWN_HANDED_OVER[language]
    elif response.outcome == "declined":
        answer = STILL_NOT_FOUND[language]
    else:
        answer = f"{response.answer}\n\n{HANDED_OVER[language]}"
    return response.model_copy(update={"answer": answer, "outcome": "handed_over"})


def _carried(
    session: Session, turn_intent: str, established: Mapping[str, str]
) -> tuple[str, dict[str, str]]:
    """The conversation's intent and slots after a turn of `turn_intent` that `established`
    these slots."""
    intent = carried_intent(session.intent, turn_intent)
    slots = carried_slots(
        session.slots,
        established,
        intent_changed=bool(session.intent) and intent != session.intent,
    )
    return intent, slots


def _used(reply: ModelAnswer, hits: Sequence[SearchHit]) -> list[SearchHit]:
    """The hits the model says it used, in its order (all of them when it did not say)."""
    if reply.sources is None:
        return list(hits)
    by_id = {hit.chunk.id: hit for hit in hits}
    return [by_id[source] for source in reply.sources if source in by_id]


def _grounded(
    session_id: str,
    language: Language,
    answer: str,
    model: str,
    used: Sequence[SearchHit],
    *,
    confidence: float,
    intent: str | None = None,
) -> ChatResponse:
    """A turn answered from the knowledge base, naming the sources the answer used; its intent
    is the first source's category unless given."""
    if intent is None:
        intent = (used[0].chunk.category if used else "") or "general"
    return ChatResponse(
        session_id=session_id,
        turn_id=new_id(),
        answer=answer,
        language=language,
        sources=[
            Source(id=hit.chunk.id, title=hit.chunk.title, score=round(hit.score, 4))
            for hit in used
        ],
        intent=intent,
        confidence=confidence,
        outcome="answered",
        model=model,
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
    """A turn answered without the knowledge base (rules, the order system)."""
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
    offers one already; a complaint with no question in it is not told the KB lacks an answer)."""
    if response.outcome == "declined" and response.answer == DECLINE[language]:
        answer = f"{APOLOGY[language]}{HUMAN_OFFER[language]}"
    elif response.outcome == "declined":
        answer = f"{APOLOGY[language]}{response.answer}"
    else:
        answer = f"{APOLOGY[language]}{HUMAN_OFFER[language]}\n\n{response.answer}"
    return response.model_copy(update={"answer": answer})
