"""The chat turn's own cost (`make bench`; not part of `make test`).

A `ChatService` with the real retriever, decision, masking and memory, and in-memory fakes of
its ports, answers passage questions that go to the model. Two measurements:

- warm turns with ports that cost nothing: the turn's overhead alone (the issue's target:
  p50 ≤ 10 ms), printed beside the retrieval alone (the same fakes) as a ratio taken in the
  same run;
- the same with the dependencies' typical latencies simulated (session store 5 ms per read and
  per write, embedding 40 ms, search 20 ms, model 800 ms): the turn's p50 against the model's
  800 ms (target: at most 80 ms more), and against the sum of all the simulated latencies taken
  one after another.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from kefu.chat import ChatService
from kefu.decision import Thresholds
from kefu.models import ChatRequest, SearchHit, Session
from kefu.ports import AnswerContext, ModelAnswer, SearchQuery, SessionConflict
from kefu.retrieval import Retriever
from tests.search_hits import hit

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kefu.ports import Vectors

DIM = 8
# Passages above `passage` and no FAQ entry: every question goes to the model.
THRESHOLDS = Thresholds(fit=0.8, head=0.5, similarity=0.95, passage=0.8)
QUESTIONS = (
    "My headphones stopped working nine days after delivery. Can I get a replacement?",
    "How long does a warranty repair usually take, and who pays the shipping?",
    "The compressor of my fridge failed after two years, is that still covered?",
    "Can I still have a phone with a cracked screen repaired if I pay for it?",
    "Is installing a washing machine free, and when is the appointment booked?",
)
PASSAGES = (
    "If a defect appears within 15 days of delivery, you can choose a replacement instead of "
    "a repair. After 15 days, defects are handled by repair under the warranty. A replacement "
    "is for the same product; if it is no longer in stock, a human agent will discuss the "
    "options with you.",
    "Shipping for warranty repairs is free both ways: you don't pay to send the item to us, "
    "and you don't pay to get it back after the repair. A repair usually takes 7-15 days; if "
    "yours has taken longer, ask for a human agent in the chat and we'll follow it up.",
    "Products whose warranty has expired, and damage the warranty doesn't cover, can still be "
    "repaired for a fee. Apply the same way: My Orders, Apply for after-sales, Repair. We send "
    "you a quote first, and the repair only starts after you accept it.",
)


@dataclass(frozen=True, slots=True)
class Latencies:
    """Seconds each fake port waits per call."""

    session_store: float = 0.0  # per read and per write
    embedding: float = 0.0
    search: float = 0.0
    model: float = 0.0


TYPICAL = Latencies(session_store=0.005, embedding=0.040, search=0.020, model=0.800)


def _wait(seconds: float) -> None:
    if seconds:
        time.sleep(seconds)


class _Embedder:
    name = "bench"
    dim = DIM

    def __init__(self, latency: float) -> None:
        self.latency = latency

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        _wait(self.latency)
        return np.full((len(texts), DIM), DIM**-0.5, dtype=np.float32)

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        return self.embed_queries(texts)


class _Index:
    """Finds the same warranty passages for every question; has no FAQ head."""

    version = "1"

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.hits = [
            replace(found, chunk=replace(found.chunk, text=text, category="after_sales"))
            for found, text in zip(
                (
                    hit("warranty-policy.en.md#012", "passage", 0.91),
                    hit("warranty-policy.en.md#010", "passage", 0.86),
                    hit("warranty-policy.en.md#014", "passage", 0.62),
                ),
                PASSAGES,
                strict=True,
            )
        ]

    def search(self, query: SearchQuery) -> list[SearchHit]:
        _wait(self.latency)
        return self.hits[: query.limit]

    def load_head(self, tenant: str) -> bytes | None:
        return None


class _Sessions:
    """A `SessionStore` in a dict, with the port's optimistic versioning."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self._stored: dict[str, Session] = {}

    def get(self, session_id: str) -> Session | None:
        _wait(self.latency)
        stored = self._stored.get(session_id)
        return None if stored is None else _copy(stored, version=stored.version)

    def save(self, session: Session) -> None:
        _wait(self.latency)
        stored = self._stored.get(session.session_id)
        if (stored.version if stored else 0) != session.version:
            raise SessionConflict(session.session_id)
        self._stored[session.session_id] = _copy(session, version=session.version + 1)


def _copy(session: Session, *, version: int) -> Session:
    return replace(session, turns=list(session.turns), slots=dict(session.slots), version=version)


class _Model:
    """Answers at once (or after its latency), citing the first passage."""

    name = "bench-model"

    def __init__(self, latency: float) -> None:
        self.latency = latency

    def answer(self, context: AnswerContext) -> ModelAnswer:
        _wait(self.latency)
        first = context.hits[0].chunk
        return ModelAnswer(
            text="A defect within 15 days of delivery can be replaced; after that it is "
            "repaired under the warranty, with shipping free both ways.",
            model=self.name,
            sources=(first.id,),
        )


def _service(latencies: Latencies) -> ChatService:
    retriever = Retriever(
        embedder=_Embedder(latencies.embedding),
        index=_Index(latencies.search),
        thresholds=THRESHOLDS,
    )
    return ChatService(
        retriever=retriever,
        model=_Model(latencies.model),
        sessions=_Sessions(latencies.session_store),
        tenant="bench",
    )


def _open(service: ChatService, sessions: int) -> None:
    """Start the conversations `_requests` continue (the service continues only sessions it
    knows: an id it never issued starts a new one)."""
    for number in range(sessions):
        service.sessions.save(Session(session_id=f"bench-session-{number:02d}"))


def _requests(sessions: int, turns: int) -> list[ChatRequest]:
    """`turns` questions round-robin over `sessions` conversations (started by `_open`)."""
    return [
        ChatRequest(
            session_id=f"bench-session-{number % sessions:02d}",
            message=QUESTIONS[number % len(QUESTIONS)],
            language="en",
        )
        for number in range(turns)
    ]


def _turn_seconds(service: ChatService, requests: Sequence[ChatRequest]) -> list[float]:
    timings = []
    for request in requests:
        started = time.perf_counter()
        response = service.handle(request)
        timings.append(time.perf_counter() - started)
        assert (response.outcome, response.model) == ("answered", _Model.name)
    return timings


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def test_a_warm_turn_costs_little_beside_its_dependencies() -> None:
    service = _service(Latencies())
    sessions, turns = 5, 500
    _open(service, sessions)
    # Warm: each conversation started (its first turn discloses the AI) and its memory window
    # filled, so that older turns fold into the summary as they do in a long conversation.
    _turn_seconds(service, _requests(sessions, 200))

    timings = _turn_seconds(service, _requests(sessions, turns))

    retriever = service.retriever
    retrieval = []
    for question in QUESTIONS * 20:
        started = time.perf_counter()
        retriever.decide(question, language="en", tenant="bench")
        retrieval.append(time.perf_counter() - started)
    p50, p99 = statistics.median(timings), _percentile(timings, 0.99)
    floor = statistics.median(retrieval)
    print(
        f"\nwarm turn, ports free: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms over "
        f"{turns} turns in {sessions} sessions; retrieval alone p50 {floor * 1000:.3f} ms "
        f"(turn {p50 / floor:.1f}x)"
    )
    assert p50 <= 0.010


def test_a_turn_adds_little_to_the_model_with_typical_latencies() -> None:
    service = _service(TYPICAL)
    sessions, turns = 4, 20
    _open(service, sessions)
    _turn_seconds(service, _requests(sessions, sessions))  # each conversation started

    timings = _turn_seconds(service, _requests(sessions, turns))

    p50, p99 = statistics.median(timings), _percentile(timings, 0.99)
    model = TYPICAL.model
    # One session read and one write, one embedding, one search, one model call.
    serial = 2 * TYPICAL.session_store + TYPICAL.embedding + TYPICAL.search + model
    print(
        f"\nturn with simulated latencies: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
        f"over {turns} turns; p50 - model {(p50 - model) * 1000:.0f} ms (target ≤ 80 ms); "
        f"the dependencies one after another {serial * 1000:.0f} ms "
        f"(p50 {(p50 - serial) * 1000:+.1f} ms beside it, {p50 / model:.3f}x the model)"
    )
    assert p50 <= model + 0.080
