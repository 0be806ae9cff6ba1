"""Hand-over to humans: the tickets a human answers, what reaches the escalation queue, and the
records the improvement loop reads (turns and ratings).

A ticket is written when a conversation is handed over (status `pending`), completed by the
escalation function (the masked transcript, summary, intent, slots, sources; status `open`),
answered by agents, and `closed`, which returns the session to the bot.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kefu.text import Language

# Why a conversation went to a human.
Trigger = Literal[
    "customer_request",  # 转人工, "talk to a person"
    "low_rating",  # a rating below 3
    "repeated_failure",  # consecutive declined or low-confidence turns
    "complaint",  # a complaint or a legal threat
    "model_failure",  # the model failed and nothing could answer instead
]
TRIGGERS: tuple[Trigger, ...] = (
    "customer_request",
    "low_rating",
    "repeated_failure",
    "complaint",
    "model_failure",
)
TicketStatus = Literal["pending", "open", "closed"]
TICKET_STATUSES: tuple[TicketStatus, ...] = ("pending", "open", "closed")
Priority = Literal["normal", "high", "urgent"]
Author = Literal["customer", "bot", "agent"]


@dataclass(frozen=True, slots=True)
class TicketMessage:
    """One message of a ticket's thread: the conversation before the hand-over (`customer`,
    `bot`), and what the customer and agents wrote after it."""

    message_id: str
    author: Author
    text: str
    at: datetime
    agent: str = ""  # who answered, for an agent's message


@dataclass(slots=True)
class Ticket:
    """A conversation handed to a human. `messages` is the thread after the hand-over (the
    customer's messages and the agents' replies); `transcript` the conversation before it,
    masked. `queued` says the escalation queue accepted the ticket; `needs_sweep` that sending
    failed and the sweeper must queue it. `notified` names the channels already told."""

    ticket_id: str
    session_id: str
    trigger: Trigger
    language: Language
    created_at: datetime
    updated_at: datetime
    tenant: str = "default"
    status: TicketStatus = "pending"
    priority: Priority = "normal"
    queued: bool = False
    needs_sweep: bool = False
    summary: str = ""
    intent: str = ""
    slots: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    transcript: list[TicketMessage] = field(default_factory=list)
    messages: list[TicketMessage] = field(default_factory=list)
    notified: list[str] = field(default_factory=list)
    closed_at: datetime | None = None
    version: int = 0


def _message_to_dict(message: TicketMessage) -> dict[str, Any]:
    data = asdict(message)
    data["at"] = message.at.isoformat()
    return data


def _message_from_dict(data: dict[str, Any]) -> TicketMessage:
    return TicketMessage(
        message_id=str(data["message_id"]),
        author=data["author"],
        text=str(data["text"]),
        at=datetime.fromisoformat(str(data["at"])),
        agent=str(data.get("agent", "")),
    )


def ticket_body(ticket: Ticket) -> dict[str, Any]:
    """A ticket as JSON-ready data (all but its version): what the stores keep."""
    return {
        "ticket_id": ticket.ticket_id,
        "session_id": ticket.session_id,
        "trigger": ticket.trigger,
        "language": ticket.language,
        "created_at": ticket.created_at.isoformat(),
        "updated_at": ticket.updated_at.isoformat(),
        "tenant": ticket.tenant,
        "status": ticket.status,
        "priority": ticket.priority,
        "queued": ticket.queued,
        "needs_sweep": ticket.needs_sweep,
        "summary": ticket.summary,
        "intent": ticket.intent,
        "slots": dict(ticket.slots),
        "sources": list(ticket.sources),
        "transcript": [_message_to_dict(m) for m in ticket.transcript],
        "messages": [_message_to_dict(m) for m in ticket.messages],
        "notified": list(ticket.notified),
        "closed_at": ticket.closed_at.isoformat() if ticket.closed_at else None,
    }


def ticket_from_body(body: dict[str, Any], version: int) -> Ticket:
    closed_at = body.get("closed_at")
    return Ticket(
        ticket_id=str(body["ticket_id"]),
        session_id=str(body["session_id"]),
        trigger=body["trigger"],
        language=body["language"],
        created_at=datetime.fromisoformat(str(body["created_at"])),
        updated_at=datetime.fromisoformat(str(body["updated_at"])),
        tenant=str(body.get("tenant", "default")),
        status=body.get("status", "pending"),
        priority=body.get("priority", "normal"),
        queued=bool(body.get("queued", False)),
        needs_sweep=bool(body.get("needs_sweep", False)),
        summary=str(body.get("summary", "")),
        intent=str(body.get("intent", "")),
        slots={str(k): str(v) for k, v in dict(body.get("slots") or {}).items()},
        sources=[str(s) for s in body.get("sources", ())],
        transcript=[_message_from_dict(m) for m in body.get("transcript", ())],
        messages=[_message_from_dict(m) for m in body.get("messages", ())],
        notified=[str(n) for n in body.get("notified", ())],
        closed_at=datetime.fromisoformat(str(closed_at)) if closed_at else None,
        version=version,
    )


def ticket_json(ticket: Ticket) -> str:
    return json.dumps(ticket_body(ticket), ensure_ascii=False)


def with_message(ticket: Ticket, message: TicketMessage, now: datetime) -> Ticket:
    return replace(ticket, messages=[*ticket.messages, message], updated_at=now)


class HandoverMessage(BaseModel):
    """What the chat function puts on the escalation queue: enough to write the ticket if the
    ticket store had failed, and to find the session the escalation function completes it from."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ticket_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    session_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    tenant: str = "default"
    trigger: Trigger | None = None  # a hand-over's; a later message needs none
    language: Language
    created_at: datetime
    message: str = Field(default="", max_length=4000, description="The masked message.")
    # `handover` opens the ticket; `message` carries what the customer wrote while a human had
    # the conversation and the ticket store could not take it at once (`turn_id` names it).
    kind: Literal["handover", "message"] = "handover"
    turn_id: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9_-]*$")

    @model_validator(mode="after")
    def _complete(self) -> HandoverMessage:
        if self.kind == "handover" and self.trigger is None:
            raise ValueError("a hand-over names its trigger")
        if self.kind == "message" and not (self.turn_id and self.message):
            raise ValueError("a customer message carries its turn id and text")
        return self


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """What the improvement loop keeps of a turn: never the customer's words, except the masked
    question of a declined turn (the knowledge-gap report groups those)."""

    session_id: str
    turn_id: str
    at: datetime
    tenant: str
    language: Language
    outcome: str
    intent: str
    latency_ms: float
    first_turn: bool = False
    handover_trigger: str = ""
    question: str = ""  # masked; only for a declined turn
    category: str = ""  # the topic a declined question came nearest to


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """A customer's rating of a conversation (or of one turn in it), comment masked."""

    session_id: str
    at: datetime
    tenant: str
    rating: int
    turn_id: str = ""
    comment: str = ""
