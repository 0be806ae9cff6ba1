"""The API's request and response bodies, and the domain records the pipeline passes around."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from kefu.text import Language

MAX_MESSAGE_CHARS = 2000
SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{7,63}$"

Outcome = Literal["answered", "declined", "handed_over"]
# An out-of-scope chunk holds examples of messages customer service does not handle: matching
# one closer than any FAQ entry is a reason to decline.
ChunkKind = Literal["faq", "passage", "out_of_scope"]

Message = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_MESSAGE_CHARS)
]


class ChatRequest(BaseModel):
    """What a customer sends: one message, in a new or a continuing session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str | None = Field(
        default=None,
        pattern=SESSION_ID_PATTERN,
        description="Continue this conversation: a session id this service returned. Omit "
        "it to start a new one; an id the service does not know (or one that expired) starts "
        "a new one too, under a new id (the response's `new_session`).",
    )
    message: Message = Field(description="The customer's message, 1 to 2,000 characters.")
    language: Language | None = Field(
        default=None, description="Answer in this language; detected from the message if omitted."
    )


class Source(BaseModel):
    id: str
    title: str
    score: float


class Handover(BaseModel):
    """A conversation handed to a human: why, and the ticket a human answers it on."""

    trigger: Literal[
        "customer_request", "low_rating", "repeated_failure", "complaint", "model_failure"
    ]
    ticket_id: str
    status: Literal["pending", "open", "closed"]


class ChatResponse(BaseModel):
    session_id: str = Field(
        description="The conversation this answer belongs to: send it with the next message. "
        "The service issues it; it may differ from the one sent (see `new_session`)."
    )
    new_session: bool = Field(
        default=False,
        description="This message started a new conversation: none was named, or the "
        "`session_id` sent is not one this service knows (never issued, or expired after "
        "its time to live). The conversation so far is not remembered; continue with the "
        "`session_id` returned.",
    )
    turn_id: str
    answer: str
    language: Language
    sources: list[Source]
    intent: str
    confidence: float = Field(ge=0.0, le=1.0)
    outcome: Outcome
    model: str
    slots: dict[str, str] = Field(
        default_factory=dict,
        description="What the conversation has established for its intent: order_id, "
        "product, reason.",
    )
    handover: Handover | None = Field(
        default=None, description="Set when the conversation is with a human (and why)."
    )


class FeedbackRequest(BaseModel):
    """A customer's rating of the conversation, or of one answer in it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str = Field(pattern=SESSION_ID_PATTERN, description="The rated conversation.")
    turn_id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_-]{8,64}$", description="The rated answer, if one."
    )
    rating: int = Field(
        ge=1, le=5, strict=True, description="1 (poor) to 5 (excellent); below 3 hands over."
    )
    comment: str | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)


class FeedbackResponse(BaseModel):
    session_id: str
    rating: int
    handover: Handover | None = None


class ThreadMessage(BaseModel):
    """A message of a hand-over's thread: the customer's, or an agent's reply."""

    message_id: str
    author: Literal["customer", "bot", "agent"]
    text: str
    at: datetime
    agent: str = ""


class SessionMessages(BaseModel):
    """What a customer reads while (and after) a human handles the conversation."""

    session_id: str
    handed_over: bool
    handover: Handover | None = Field(
        default=None, description="The conversation's latest hand-over, if any."
    )
    messages: list[ThreadMessage]


class TicketSummary(BaseModel):
    ticket_id: str
    session_id: str
    status: Literal["pending", "open", "closed"]
    trigger: str
    priority: Literal["normal", "high", "urgent"]
    language: Language
    intent: str
    created_at: datetime
    updated_at: datetime
    last_message: str = ""


class TicketList(BaseModel):
    tickets: list[TicketSummary]


class TicketView(TicketSummary):
    """Everything an agent needs: the masked conversation before the hand-over, its summary,
    what the customer was doing, the sources the bot used, and the thread since."""

    summary: str
    slots: dict[str, str]
    sources: list[str]
    transcript: list[ThreadMessage]
    messages: list[ThreadMessage]
    notified: list[str]
    closed_at: datetime | None = None


class AgentReply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: Message = Field(description="The agent's reply to the customer.")
    agent: str = Field(default="", max_length=64, description="Who is answering.")


class HealthResponse(BaseModel):
    status: Literal["ok"]
    version: str


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail

    @classmethod
    def of(cls, code: str, message: str) -> dict[str, Any]:
        """The API's error body, as every error (the function's, the local server's) is sent."""
        return cls(error=ErrorDetail(code=code, message=message)).model_dump()


@dataclass(frozen=True, slots=True)
class Chunk:
    """One retrievable unit of the knowledge base: an FAQ entry or a passage of a document.

    A customer's question is matched against the chunk's `content` (its title, section and
    text) and, for an FAQ entry, against its `keys`: the standard and similar questions.
    `text` is what an answer is built from.
    """

    id: str
    kind: ChunkKind
    lang: Language
    title: str
    text: str
    keys: tuple[str, ...]
    category: str = ""
    source: str = ""
    section: str = ""
    tenant: str = "default"
    # The KB version at which the index wrote this chunk; set by the index, not by loaders, and
    # not part of its content (`fingerprint` leaves it out).
    kb_version: str = ""

    @property
    def content(self) -> str:
        heading = " > ".join(part for part in (self.title, self.section) if part)
        return f"{heading}\n{self.text}" if heading else self.text


def fingerprint(chunk: Chunk) -> str:
    """A content hash: an unchanged chunk is neither re-embedded nor rewritten."""
    content = asdict(chunk)
    del content["kb_version"]
    payload = json.dumps(content, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class StoredChunk(NamedTuple):
    """What an index tells about a stored chunk without reading its text or vectors."""

    source: str
    fingerprint: str
    kind: ChunkKind
    lang: Language


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A chunk found for a query, with what found it (`kefu.scoring`).

    `dense` is the chunk's semantic similarity (an FAQ entry's blends its closest question, the
    centroid of its questions and its content); `nearest` is its single closest key's (a
    question, an out-of-scope example, or a passage's text), which the decision compares
    between FAQ entries and out-of-scope examples; `lexical` is its BM25 score relative to the
    best of the search; `score` is the index's ranking. An FAQ entry the tenant's FAQ head
    re-ranked also has the head's own `probability` and its `fit` (`dense` relative to how
    alike the entry's own questions are, `FaqHead.rank`); both are None otherwise.
    """

    chunk: Chunk
    score: float
    dense: float
    lexical: float
    nearest: float
    probability: float | None = None
    fit: float | None = None


@dataclass(frozen=True, slots=True)
class Turn:
    turn_id: str
    message: str
    answer: str
    language: Language
    outcome: Outcome
    intent: str
    at: datetime
    sources: tuple[str, ...] = ()


@dataclass(slots=True)
class Session:
    """A conversation as memory keeps it: the recent turns (a window), a rolling summary of the
    older ones, what the customer is trying to do (`intent`, a KB category) and what is known
    about it (`slots`: order id, product, reason). `version` counts the saves (0: never saved)."""

    session_id: str
    turns: list[Turn] = field(default_factory=list)
    handed_over: bool = False
    summary: str = ""
    intent: str = ""
    slots: dict[str, str] = field(default_factory=dict)
    version: int = 0
    turn_count: int = 0
    # Hand-over: the open ticket while a human has the conversation, the consecutive declined
    # or unsure answers, and whether the session ever went to a human or was rated below 3
    # (it is then not resolved at first contact).
    ticket_id: str = ""
    failures: int = 0
    escalated: bool = False
    handed_over_at: datetime | None = None  # when `ticket_id` was opened
