"""The interfaces between the chat pipeline and the outside systems it uses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from kefu.models import Chunk, SearchHit, Session, StoredChunk, Turn
from kefu.text import Language

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

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


class SessionStore(Protocol):
    """Conversation memory, one record per session."""

    def get(self, session_id: str) -> Session | None: ...

    def append(self, session_id: str, turn: Turn, *, handed_over: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class AnswerContext:
    """Everything a chat model needs to answer one customer message."""

    question: str
    language: Language
    hits: Sequence[SearchHit]
    history: Sequence[Turn]


@dataclass(frozen=True, slots=True)
class ModelAnswer:
    text: str
    model: str


class ChatModel(Protocol):
    """Writes an answer from the retrieved context. Never called for uncovered questions."""

    name: str

    def answer(self, context: AnswerContext) -> ModelAnswer: ...


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
