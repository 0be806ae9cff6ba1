"""What customers and agents read of a hand-over: the API's views of tickets and threads."""

from __future__ import annotations

from collections.abc import Sequence

from kefu.errors import SessionNotFound
from kefu.handover import HandoverDesk
from kefu.models import (
    Handover,
    SessionMessages,
    ThreadMessage,
    TicketSummary,
    TicketView,
)
from kefu.ports import SessionStore
from kefu.tickets import Ticket, TicketMessage


def thread(messages: Sequence[TicketMessage]) -> list[ThreadMessage]:
    return [
        ThreadMessage(message_id=m.message_id, author=m.author, text=m.text, at=m.at, agent=m.agent)
        for m in messages
    ]


def ticket_summary(ticket: Ticket) -> TicketSummary:
    return TicketSummary(
        ticket_id=ticket.ticket_id,
        session_id=ticket.session_id,
        status=ticket.status,
        trigger=ticket.trigger,
        priority=ticket.priority,
        language=ticket.language,
        intent=ticket.intent,
        created_at=ticket.created_at,
        updated_at=ticket.updated_at,
        last_message=ticket.messages[-1].text if ticket.messages else "",
    )


def ticket_view(ticket: Ticket) -> TicketView:
    return TicketView(
        **ticket_summary(ticket).model_dump(),
        summary=ticket.summary,
        slots=ticket.slots,
        sources=ticket.sources,
        transcript=thread(ticket.transcript),
        messages=thread(ticket.messages),
        notified=ticket.notified,
        closed_at=ticket.closed_at,
    )


def session_messages(
    sessions: SessionStore, desk: HandoverDesk, session_id: str, *, after: str | None = None
) -> SessionMessages:
    """The session's hand-over threads, oldest first (only those after `after`, if given)."""
    tickets = desk.tickets.by_session(session_id)
    session = sessions.get(session_id)
    if session is None and not tickets:
        raise SessionNotFound(session_id)
    messages = [message for ticket in tickets for message in ticket.messages]
    messages.sort(key=lambda message: message.at)
    if after is not None:
        ids = [message.message_id for message in messages]
        messages = messages[ids.index(after) + 1 :] if after in ids else messages
    latest = tickets[-1] if tickets else None
    return SessionMessages(
        session_id=session_id,
        handed_over=bool(session and session.handed_over),
        handover=(
            Handover(trigger=latest.trigger, ticket_id=latest.ticket_id, status=latest.status)
            if latest
            else None
        ),
        messages=thread(messages),
    )
