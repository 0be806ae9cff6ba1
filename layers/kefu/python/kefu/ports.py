"""The interfaces between the chat pipeline and the outside systems it uses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from kefu.models import Chunk, SearchHit, Session, StoredChunk, Turn
from kefu.text import Language

if TYPE_CHECKING:
    from datetime import datetime

    import numpy as np
    import numpy.typing as npt

    from kefu.tickets import FeedbackRecord, Ticket, TicketStatus, TurnRecord

    Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Turns text into unit-length float32 vectors.

    Questions (a customer's, or an FAQ entry's standard and similar questions) are matched
    symmetrically and go through `embed_queries`; document passages through `embed_passages`.
    """

    name: str
    dim: int

    def embed_queries(self, texts: Sequence[str]) -> Vectors: ...

    def embed_passages(self, texts: Sequence[str]) -> Vectors: ...


@dataclass(frozen=True, slots=True)
class SearchQuery:
    text: str
    vector: Vectors
    language: Language | None = None
    tenant: str = "default"
    limit: int = 5
    category: str | None = None


class KnowledgeReader(Protocol):
    """What the chat path reads of the knowledge index: hybrid (lexical + vector) search over
    its chunks, a tenant's FAQ head, and the version."""

    def search(self, query: SearchQuery) -> list[SearchHit]: ...

    def load_head(self, tenant: str) -> bytes | None: ...

    @property
    def version(self) -> str:
        """Changes whenever the content (or a head) changes: the retriever reads a head again
        when it moves on, and an answer cache can key on it."""
        ...


class KnowledgeWriter(Protocol):
    """What ingestion writes and lists in the knowledge index."""

    def upsert(self, chunks: Sequence[Chunk], key_vectors: Sequence[Vectors]) -> None:
        """Add or replace chunks.

        `key_vectors[i]` holds the vector of `chunks[i].content` in row 0, then one row per key.
        """
        ...

    def delete(self, chunk_ids: Sequence[str], *, tenant: str) -> None:
        """Remove the tenant's chunks with these ids (ids are unique within a tenant only)."""
        ...

    def fingerprints(self, tenant: str, source: str | None = None) -> dict[str, str]:
        """The content fingerprint of every chunk the tenant has (from `source` only, if given),
        by chunk id."""
        ...

    def catalog(self, tenant: str) -> dict[str, StoredChunk]:
        """The source, fingerprint, kind and language of every chunk the tenant has, by chunk
        id, in one read: what an ingest of many files compares against."""
        ...

    def faq_questions(self, tenant: str) -> dict[str, Vectors]:
        """The question vectors of every FAQ entry the tenant has (a row each), by chunk id:
        what the FAQ head is trained on."""
        ...

    def save_head(self, tenant: str, head: bytes | None, *, trained_at: int = 0) -> bool:
        """Store the tenant's serialised FAQ head, trained on the KB as it was at version
        `trained_at`, unless a head trained on a later version is stored (concurrent ingests:
        the newest KB wins); None removes the head. Returns whether it was written; a write
        moves the version on."""
        ...

    def head_tenants(self) -> list[str]:
        """The tenants that have a stored FAQ head, sorted: what an upgrade looks through for
        heads stored by an earlier release."""
        ...

    def count(self) -> int: ...


class KnowledgeIndex(KnowledgeReader, KnowledgeWriter, Protocol):
    """Both sides, as an index adapter implements them: ingestion reads the version and the
    stored head too (to stamp and to check a head)."""


class SessionConflict(Exception):
    """Another request saved the session since it was read: read it again and redo the change."""


class AnswerCache(Protocol):
    """Answers kept for a while by key (`kefu.answer_cache`). Both methods raise
    `DependencyUnavailable` when the cache fails or is slow; the turn then goes on without it."""

    def get(self, key: str) -> bytes | None:
        """The value stored under `key`, or None (never stored, or expired)."""
        ...

    def put(self, key: str, value: bytes, ttl_seconds: int) -> None:
        """Store `value` under `key` for `ttl_seconds`."""
        ...


class SessionStore(Protocol):
    """Conversation memory: one bounded record per session (`kefu.memory` keeps it bounded),
    expiring a time to live after its last save."""

    def get(self, session_id: str) -> Session | None:
        """The session, or None when there is none by that id or it expired."""
        ...

    def save(self, session: Session) -> None:
        """Store the session, whose `version` is the one read (0 for a new session), as version
        `version + 1`. Raises `SessionConflict` when the stored version moved on in between,
        and `DependencyUnavailable` when the store cannot be reached."""
        ...


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function a model may call: its name, what it does, and its input's JSON schema."""

    name: str
    description: str
    input_schema: Mapping[str, Any]


class Tools(Protocol):
    """The functions a model may call while answering (the order tools)."""

    @property
    def specs(self) -> Sequence[ToolSpec]: ...

    def call(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The tool's result as JSON-ready data. A failure is a result (`{"error": ...}`) the
        model can explain, never an exception."""
        ...


@dataclass(frozen=True, slots=True)
class AnswerContext:
    """Everything a chat model needs to answer one customer message.

    `summary` is the rolling summary of the turns older than `history`; `facts` what the
    conversation has established (its intent and slots: order id, product, reason); `tools` the
    functions the model may call, if any.
    """

    question: str
    language: Language
    hits: Sequence[SearchHit]
    history: Sequence[Turn]
    summary: str = ""
    facts: Mapping[str, str] = field(default_factory=dict)
    tools: Tools | None = None
    # When the turn must be answered by, on `time.monotonic()`'s clock: no tool round starts
    # that could not end before it.
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class ModelAnswer:
    """A model's answer. `sources` are the ids of the sources it says it used (None when it did
    not say); `tools_used` the tools it called, in order."""

    text: str
    model: str
    sources: tuple[str, ...] | None = None
    tools_used: tuple[str, ...] = ()


class ChatModel(Protocol):
    """Writes an answer from the retrieved context (and the tools, when given). Never called
    for uncovered questions. Raises `DependencyUnavailable` when it cannot answer."""

    name: str

    def answer(self, context: AnswerContext) -> ModelAnswer: ...


@runtime_checkable
class ConversationModel(Protocol):
    """A language model that can also resolve a follow-up into a standalone question and fold
    old turns into the rolling summary (Claude). The extractive model cannot; the chat turn
    then conditions retrieval on the conversation's topic and summarises extractively."""

    def standalone_question(
        self, message: str, history: Sequence[Turn], summary: str, language: Language
    ) -> str:
        """`message` rewritten to be understood without the conversation. Raises
        `DependencyUnavailable`."""
        ...

    def summarize(self, summary: str, turns: Sequence[Turn], language: Language) -> str:
        """The rolling `summary` with `turns` folded in, short. Raises `DependencyUnavailable`."""
        ...


@dataclass(frozen=True, slots=True)
class TrackingEvent:
    at: str  # ISO 8601, as the order system gives it
    description: str


@dataclass(frozen=True, slots=True)
class Order:
    """What the enterprise's order system tells about one order: its status, its parcel's
    tracking, a refund in progress, and until when it may be returned."""

    order_id: str
    status: str  # placed, paid, shipped, delivered, cancelled, returned
    placed_at: str
    items: tuple[str, ...]
    carrier: str = ""
    tracking_number: str = ""
    tracking: tuple[TrackingEvent, ...] = ()
    refund_status: str = ""  # "", requested, approved, refunded, rejected
    returnable_until: str = ""  # ISO date; "" when it cannot be returned


class OrderSystem(Protocol):
    """The enterprise's order system, as the agent's tools read it."""

    def find(self, order_id: str) -> Order | None:
        """The order, or None when there is no such order. Raises DependencyUnavailable."""
        ...


class TicketConflict(Exception):
    """Another request saved the ticket since it was read: read it again and redo the change."""


class TicketStore(Protocol):
    """Hand-over tickets (`kefu.tickets.Ticket`), kept until deleted: a ticket is the record of
    a customer a human helped. Every method raises `DependencyUnavailable` when the store
    cannot be reached."""

    def create(self, ticket: Ticket) -> bool:
        """Store a new ticket (its `version` 0) as version 1. Returns False, changing nothing,
        when a ticket with its id exists already (a redelivered hand-over)."""
        ...

    def get(self, ticket_id: str) -> Ticket | None: ...

    def save(self, ticket: Ticket) -> None:
        """Store the ticket, whose `version` is the one read, as `version + 1`. Raises
        `TicketConflict` when the stored version moved on in between."""
        ...

    def by_status(
        self,
        status: TicketStatus,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Ticket]:
        """The tickets in `status` created in [since, until), oldest first (or newest first),
        at most `limit` of them, read no further than that."""
        ...

    def by_session(self, session_id: str) -> list[Ticket]:
        """The session's tickets, oldest first."""
        ...


class HandoverQueue(Protocol):
    """The escalation queue (SQS in AWS, a SQLite-backed queue locally)."""

    def send(self, body: str) -> str | None:
        """Queue one message (returning its id, if the queue gives one). Raises
        `DependencyUnavailable` when the queue did not take it."""
        ...


class Notifier(Protocol):
    """Tells the helpdesk about a ticket (SNS, a signed webhook, the log)."""

    name: str

    def notify(self, ticket: Ticket) -> None:
        """Raises `DependencyUnavailable` when the channel did not take the notice after its
        own retries."""
        ...


class Insights(Protocol):
    """What the improvement loop reads: a record per turn and per rating. Writes raise
    `DependencyUnavailable`; the chat turn logs and goes on."""

    def record_turn(self, record: TurnRecord) -> None: ...

    def record_feedback(self, record: FeedbackRecord) -> None: ...

    def turns(self, since: datetime, until: datetime) -> list[TurnRecord]:
        """The turns recorded at [since, until), oldest first."""
        ...

    def feedback(self, since: datetime, until: datetime) -> list[FeedbackRecord]: ...
