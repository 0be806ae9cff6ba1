"""Hand-over to humans: when a conversation goes to a human, and how its ticket lives.

A hand-over is never lost: its ticket is written first (status `pending`), then queued; a send
that fails is retried, and failing that the ticket is marked for the sweeper, which queues it
again. The escalation function completes the ticket from the session (the masked transcript,
the rolling summary, intent, slots and sources; status `open`) and tells the helpdesk. Agents
answer on the ticket; closing it returns the session to the bot.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from kefu.errors import DependencyUnavailable, TicketClosed, TicketNotFound
from kefu.models import Session
from kefu.observability import logger
from kefu.ports import (
    HandoverQueue,
    Notifier,
    SessionConflict,
    SessionStore,
    TicketConflict,
    TicketStore,
)
from kefu.text import Language
from kefu.tickets import (
    HandoverMessage,
    Priority,
    Ticket,
    TicketMessage,
    Trigger,
    with_message,
)

# A complaint made as such, or a threat of legal action: a human takes over at once. Mere
# frustration ("太慢了", "this is ridiculous") gets an apology and the offer of a human.
_COMPLAINT = re.compile(r"投诉|举报|\b(complain|complaint|complaints|complaining)\b", re.IGNORECASE)
# Words that name the law only in a threat are matched in one: "take you to court", not "a
# tennis court"; "file a chargeback", not "how do I avoid a chargeback".
_LEGAL = re.compile(
    r"律师|起诉|法院|诉讼|告你们|消协|消费者协会|(?<!\d)12315(?!\d)|市场监管|工商局|仲裁|报警|"
    r"\b(lawyer|attorney|solicitor|suing|lawsuit|legal action|small claims|ombudsman|"
    r"trading standards)\b|"
    r"\b(sue|sued)\s+(you|your|them|this|the company)\b|"
    r"\b(will|gonna|going to|i'll|i'd|shall|to)\s+sue\b|"
    r"\b(see|take|taking|drag)\s+(you|you guys|this|it|them)\s+(in|to)\s+court\b|"
    r"\b(report|reporting)\s+(you|you guys|this|it|them|your company)\s+to\s+the\s+"
    r"(regulator|authorities|police|ftc|bbb)\b|"
    r"\b(file|filing|raise|raising|open|opening|do|doing|start|starting|make|making)\s+a\s+"
    r"chargeback\b",
    re.IGNORECASE,
)
# A hand-over's ticket not written by now never will be (the queued message that writes it when
# the store failed is delivered within minutes; the sweeper runs every few): the bot takes over.
TICKET_WRITTEN_WITHIN = timedelta(hours=1)
# How many times a hand-over is offered to the queue before the sweeper is left to it.
SEND_ATTEMPTS = 3
SEND_PAUSE_SECONDS = 0.05
# How many times a ticket or session change is redone when another request saved meanwhile.
SAVE_ATTEMPTS = 5


def complaint_kind(message: str) -> Priority | None:
    """`urgent` for a legal threat, `high` for a complaint, None for neither."""
    if _LEGAL.search(message):
        return "urgent"
    if _COMPLAINT.search(message):
        return "high"
    return None


def priority_of(trigger: Trigger, message: str) -> Priority:
    if trigger == "complaint":
        return complaint_kind(message) or "high"
    return "high" if trigger == "low_rating" else "normal"


def new_id() -> str:
    return uuid.uuid4().hex


class HandoverDesk:
    """Opens, completes, answers and closes hand-over tickets."""

    def __init__(
        self,
        *,
        tickets: TicketStore,
        queue: HandoverQueue,
        sessions: SessionStore,
        tenant: str = "default",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        self.tickets = tickets
        self.queue = queue
        self.sessions = sessions
        self.tenant = tenant
        self.clock = clock
        self.pause = pause

    # --- the chat side ------------------------------------------------------------------

    def open(
        self, *, session_id: str, trigger: Trigger, language: Language, message: str
    ) -> Ticket:
        """Write a pending ticket for the session. If the store fails, the queue's message
        carries what the escalation function needs to write it (with `message`, the masked
        message that handed over); the ticket is returned either way."""
        now = self.clock()
        ticket = Ticket(
            ticket_id=new_id(),
            session_id=session_id,
            trigger=trigger,
            language=language,
            created_at=now,
            updated_at=now,
            tenant=self.tenant,
            priority=priority_of(trigger, message),
        )
        try:
            self.tickets.create(ticket)
            ticket.version = 1
        except DependencyUnavailable:
            logger.exception(
                "ticket store unavailable; the queued hand-over will write the ticket",
                extra={"ticket_id": ticket.ticket_id, "session_id": session_id},
            )
        return ticket

    def dispatch(self, ticket: Ticket, message: str = "") -> bool:
        """Queue the ticket for the escalation function, retrying a failed send; failing that,
        mark it for the sweeper. Returns whether the queue took it."""
        body = HandoverMessage(
            ticket_id=ticket.ticket_id,
            session_id=ticket.session_id,
            tenant=ticket.tenant,
            trigger=ticket.trigger,
            language=ticket.language,
            created_at=ticket.created_at,
            message=message[:4000],
        ).model_dump_json()
        if self._send(body):
            return True
        # If the store is down too, the log below is the hand-over's last record.
        with contextlib.suppress(DependencyUnavailable):
            self._update(ticket.ticket_id, lambda t: replace(t, needs_sweep=True), missing_ok=True)
        logger.error(
            "escalation queue unavailable; the ticket waits for the sweeper",
            extra={"ticket_id": ticket.ticket_id, "handover": body},
        )
        return False

    def forward(
        self, *, ticket_id: str, session_id: str, turn_id: str, text: str, language: Language
    ) -> bool:
        """Queue what the customer wrote to a human when the ticket could not take it at once
        (its store failed, or the ticket is not written yet): the escalation function appends
        it. Returns whether the queue took it; if not, the log keeps it, and the session too."""
        body = HandoverMessage(
            kind="message",
            ticket_id=ticket_id,
            session_id=session_id,
            turn_id=turn_id,
            tenant=self.tenant,
            language=language,
            created_at=self.clock(),
            message=text[:4000],
        ).model_dump_json()
        if self._send(body):
            return True
        logger.error(
            "escalation queue unavailable; the customer's message is kept in the session only",
            extra={"ticket_id": ticket_id, "handover": body},
        )
        return False

    def pass_on(
        self, session: Session, text: str, *, turn_id: str, language: Language
    ) -> Ticket | None:
        """What the customer wrote, in turn `turn_id`, to the human who has `session`: appended
        to its ticket, which is returned (a closed one unchanged). None when the ticket store
        failed or the ticket is not written yet (its store had failed at the hand-over): the
        queue carries the text to the escalation function, which appends it once the ticket
        exists. Raises `TicketNotFound` when the ticket is still not written
        `TICKET_WRITTEN_WITHIN` after the hand-over: it never will be."""
        try:
            ticket = self.add_customer_message(session.ticket_id, text, turn_id)
        except DependencyUnavailable:
            logger.exception("ticket store unavailable; the message goes by the queue")
            ticket = None
        else:
            since = session.handed_over_at
            if (
                ticket is None
                and since is not None
                and self.clock() - since > TICKET_WRITTEN_WITHIN
            ):
                raise TicketNotFound(session.ticket_id)
        if ticket is None:
            self.forward(
                ticket_id=session.ticket_id,
                session_id=session.session_id,
                turn_id=turn_id,
                text=text,
                language=language,
            )
        return ticket

    def merge(self, duplicate: Ticket, *, into: str, message: str, turn_id: str) -> Ticket | None:
        """Two messages of one session handed over at once: `message` (of turn `turn_id`)
        joins `into`, the ticket that has the conversation, which is returned, and `duplicate`,
        never queued, is closed. None when `into` is closed or missing, or the store cannot be
        reached: `duplicate` is then left as it is, for the caller to queue."""
        try:
            kept = self.add_customer_message(into, message, turn_id)
            if kept is None or kept.status == "closed":
                return None
            now = self.clock()
            self._update(
                duplicate.ticket_id,
                lambda t: (
                    t
                    if t.status == "closed"
                    else replace(t, status="closed", closed_at=now, updated_at=now)
                ),
            )
        except DependencyUnavailable:
            logger.exception(
                "ticket store unavailable; the later hand-over is queued on its own",
                extra={"ticket_id": duplicate.ticket_id, "kept": into},
            )
            return None
        return kept

    def _send(self, body: str) -> bool:
        for attempt in range(SEND_ATTEMPTS):
            try:
                self.queue.send(body)
                return True
            except DependencyUnavailable:
                if attempt + 1 < SEND_ATTEMPTS:
                    self.pause(SEND_PAUSE_SECONDS * 2**attempt)
        return False

    def add_customer_message(self, ticket_id: str, text: str, turn_id: str = "") -> Ticket | None:
        """Append what the customer wrote while a human has the conversation; once only for a
        given `turn_id`. A closed ticket takes nothing more: it is returned unchanged (the bot
        has the conversation again). None when there is no such ticket."""
        now = self.clock()
        message = _message("customer", text, now)
        if turn_id:
            message = replace(message, message_id=asked_id(turn_id))

        def appended(ticket: Ticket) -> Ticket:
            if ticket.status == "closed" or any(
                known.message_id == message.message_id
                for known in (*ticket.transcript, *ticket.messages)
            ):
                return ticket
            return with_message(ticket, message, now)

        return self._update(ticket_id, appended)

    # --- the escalation function --------------------------------------------------------

    def deliver(self, forwarded: HandoverMessage) -> Ticket:
        """Append a customer's message the chat function forwarded (idempotent). Raises
        `DependencyUnavailable` while the ticket is not written yet, so the queue redelivers it
        after the hand-over's own message has written it."""
        ticket = self.add_customer_message(
            forwarded.ticket_id, forwarded.message, forwarded.turn_id
        )
        if ticket is None:
            raise DependencyUnavailable(f"ticket {forwarded.ticket_id} is not written yet")
        if ticket.status == "closed":
            logger.warning(
                "a forwarded message reached a closed ticket",
                extra={"ticket_id": ticket.ticket_id, "turn_id": forwarded.turn_id},
            )
        return ticket

    def complete(self, handover: HandoverMessage) -> Ticket:
        """Fill the ticket in from the session (writing it first if the chat function could
        not): idempotent, a redelivered message changes nothing more."""
        if handover.kind != "handover":
            raise ValueError("complete() takes a hand-over; deliver() a forwarded message")
        ticket = self.tickets.get(handover.ticket_id)
        if ticket is None:
            created = _ticket_from_message(handover)
            if not self.tickets.create(created):
                ticket = self.tickets.get(handover.ticket_id)
            ticket = ticket or replace(created, version=1)
        if ticket.status != "pending":
            return ticket
        session = self.sessions.get(handover.session_id)
        return (
            self._update(
                ticket.ticket_id,
                lambda t: (
                    _completed(t, session, handover.message, self.clock())
                    if t.status == "pending"
                    else t
                ),
            )
            or ticket
        )

    def announce(self, ticket: Ticket, notifiers: Sequence[Notifier]) -> Ticket:
        """Tell each channel not yet told. Raises `DependencyUnavailable` when one failed (the
        others are recorded, so a redelivery tells only the one that failed)."""
        failed: list[str] = []
        for notifier in notifiers:
            if notifier.name in ticket.notified:
                continue
            try:
                notifier.notify(ticket)
            except DependencyUnavailable:
                logger.exception("helpdesk channel failed", extra={"channel": notifier.name})
                failed.append(notifier.name)
                continue
            ticket = self._update(ticket.ticket_id, _notified_by(notifier.name)) or ticket
        if failed:
            raise DependencyUnavailable(f"helpdesk channels failed: {', '.join(failed)}")
        return ticket

    def sweep(self, *, older_than: timedelta) -> list[str]:
        """Queue again every pending ticket that was never completed: marked for the sweeper,
        or older than `older_than` (its message was lost). Returns their ids."""
        cutoff = self.clock() - older_than
        swept = []
        for ticket in self.tickets.by_status("pending"):
            stuck = ticket.needs_sweep or ticket.created_at <= cutoff
            if stuck and self.dispatch(ticket):
                self._update(ticket.ticket_id, lambda t: replace(t, needs_sweep=False))
                swept.append(ticket.ticket_id)
        return swept

    # --- agents -------------------------------------------------------------------------

    def get(self, ticket_id: str) -> Ticket:
        ticket = self.tickets.get(ticket_id)
        if ticket is None:
            raise TicketNotFound(ticket_id)
        return ticket

    def reply(self, ticket_id: str, text: str, agent: str = "") -> Ticket:
        now = self.clock()

        def answered(ticket: Ticket) -> Ticket:
            if ticket.status == "closed":
                raise TicketClosed(ticket_id)
            return with_message(ticket, _message("agent", text, now, agent), now)

        ticket = self._update(ticket_id, answered)
        if ticket is None:
            raise TicketNotFound(ticket_id)
        return ticket

    def close(self, ticket_id: str) -> Ticket:
        """Close the ticket and give the session back to the bot (idempotent)."""
        now = self.clock()
        ticket = self._update(
            ticket_id,
            lambda t: (
                t
                if t.status == "closed"
                else replace(t, status="closed", closed_at=now, updated_at=now)
            ),
        )
        if ticket is None:
            raise TicketNotFound(ticket_id)
        for _ in range(SAVE_ATTEMPTS):
            session = self.sessions.get(ticket.session_id)
            if session is None or session.ticket_id not in ("", ticket_id):
                break  # expired, or already with another ticket
            if not session.handed_over and not session.ticket_id:
                break
            try:
                self.sessions.save(
                    replace(
                        session, handed_over=False, ticket_id="", handed_over_at=None, failures=0
                    )
                )
                break
            except SessionConflict:
                continue
        return ticket

    # --- helpers ------------------------------------------------------------------------

    def _update(
        self, ticket_id: str, change: Callable[[Ticket], Ticket], *, missing_ok: bool = False
    ) -> Ticket | None:
        """Apply `change` to the stored ticket, redoing it when another request saved first.
        None when there is no such ticket."""
        for _ in range(SAVE_ATTEMPTS):
            try:
                ticket = self.tickets.get(ticket_id)
            except DependencyUnavailable:
                if missing_ok:
                    return None
                raise
            if ticket is None:
                return None
            changed = change(ticket)
            if changed is ticket:
                return ticket
            try:
                self.tickets.save(changed)
                return replace(changed, version=changed.version + 1)
            except TicketConflict:
                continue
        raise DependencyUnavailable(f"ticket {ticket_id} kept changing; try again")


def _notified_by(channel: str) -> Callable[[Ticket], Ticket]:
    def notified(ticket: Ticket) -> Ticket:
        if channel in ticket.notified:
            return ticket
        return replace(ticket, notified=[*ticket.notified, channel])

    return notified


def asked_id(turn_id: str) -> str:
    """The id of what the customer wrote in turn `turn_id`, in a ticket's transcript or thread:
    one id wherever the message is copied, so it is there once."""
    return f"{turn_id}-q"


def _message(author: str, text: str, at: datetime, agent: str = "") -> TicketMessage:
    return TicketMessage(message_id=new_id(), author=author, text=text, at=at, agent=agent)  # type: ignore[arg-type]


def _ticket_from_message(handover: HandoverMessage) -> Ticket:
    assert handover.trigger is not None  # validated: a hand-over names its trigger
    created = handover.created_at
    return Ticket(
        ticket_id=handover.ticket_id,
        session_id=handover.session_id,
        trigger=handover.trigger,
        language=handover.language,
        created_at=created,
        updated_at=created,
        tenant=handover.tenant,
        priority=priority_of(handover.trigger, handover.message),
        queued=True,
    )


def _completed(ticket: Ticket, session: Session | None, message: str, now: datetime) -> Ticket:
    """The ticket with what the agent needs from the session (whose turns are stored masked):
    the transcript is the conversation up to the hand-over; what the customer wrote after it
    joins the thread, once (some of it may have been appended while the ticket was pending).
    `message`, the one that handed over, ends the transcript if the session lacks it (its save
    had failed)."""
    transcript: list[TicketMessage] = []
    late: list[TicketMessage] = []
    sources: list[str] = []
    cut = session.handed_over_at if session is not None else None
    threaded = {known.message_id for known in ticket.messages}
    turns = []
    for turn in session.turns if session is not None else []:
        if asked_id(turn.turn_id) in threaded:
            continue
        asked = TicketMessage(asked_id(turn.turn_id), "customer", turn.message, turn.at)
        if cut is not None and turn.at > cut:
            late.append(asked)
            continue
        turns.append(turn)
        transcript += [asked, TicketMessage(f"{turn.turn_id}-a", "bot", turn.answer, turn.at)]
        sources.extend(source for source in turn.sources if source not in sources)
    if message and not any(turn.message == message for turn in turns):
        transcript.append(TicketMessage(asked_id(ticket.ticket_id), "customer", message, now))
    return replace(
        ticket,
        status="open",
        queued=True,
        needs_sweep=False,
        summary=session.summary if session else "",
        intent=session.intent if session else "",
        slots=dict(session.slots) if session else {},
        sources=sources,
        messages=sorted([*ticket.messages, *late], key=lambda known: known.at),
        transcript=transcript,
        updated_at=now,
    )
