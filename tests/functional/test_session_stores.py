"""Both session stores keep a conversation the same way; DynamoDB runs against moto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kefu.adapters.sessions import DynamoDBSessionStore, SqliteSessionStore
from kefu.errors import DependencyUnavailable
from kefu.memory import Memory, MemoryPolicy
from kefu.models import Session, Turn
from kefu.ports import SessionConflict, SessionStore

AT = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
TABLE = "kefu-sessions"


def turn(number: int, outcome: str = "answered", *, words: int = 1) -> Turn:
    return Turn(
        turn_id=f"turn-{number}",
        message=f"问题 {number} " + "很长的问题" * words,
        answer=f"answer {number}",
        language="zh",
        outcome=outcome,  # type: ignore[arg-type]
        intent="shipping",
        at=AT + timedelta(minutes=number),
        sources=(f"shipping-0{number}-zh",),
    )


def saved(store: SessionStore, session: Session) -> Session:
    store.save(session)
    stored = store.get(session.session_id)
    assert stored is not None
    return stored


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "session_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "session_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest) -> SessionStore:
    if request.param == "sqlite":
        return SqliteSessionStore(":memory:")
    client = request.getfixturevalue("dynamodb")
    return DynamoDBSessionStore(TABLE, client=client, ttl=timedelta(hours=72))


def test_an_unknown_session_is_none(store: SessionStore) -> None:
    assert store.get("no-such-session") is None


def test_a_session_comes_back_with_every_field(store: SessionStore) -> None:
    session = Session(
        "session-1",
        turns=[turn(1), turn(2, "handed_over")],
        handed_over=True,
        summary="- 问题 0 → answer 0",
        intent="returns",
        slots={"order_id": "20231105-8812", "reason": "size"},
        turn_count=3,
        ticket_id="a" * 32,
        failures=1,
        escalated=True,
        handed_over_at=datetime(2026, 12, 7, 9, 30, 15, 123456, tzinfo=UTC),
    )
    stored = saved(store, session)
    assert stored == replace(session, version=1)
    assert store.get("session-2") is None


def test_a_save_on_a_stale_version_is_a_conflict_and_changes_nothing(
    store: SessionStore,
) -> None:
    first = saved(store, Session("session-1", turns=[turn(1)], turn_count=1))
    saved(store, replace(first, turns=[turn(1), turn(2)], turn_count=2))
    # A second request read version 1 too, and saves after the first one did.
    with pytest.raises(SessionConflict):
        store.save(replace(first, turns=[turn(1), turn(3)], turn_count=2))
    with pytest.raises(SessionConflict):
        store.save(Session("session-1", turns=[turn(9)]))  # "new", but it exists
    stored = store.get("session-1")
    assert stored is not None
    assert [t.turn_id for t in stored.turns] == ["turn-1", "turn-2"]
    assert stored.version == 2


def test_a_long_conversation_stays_one_bounded_record(store: SessionStore) -> None:
    """200 turns of 100 tokens each: the record holds the window and a bounded summary."""
    memory = Memory(MemoryPolicy(budget_tokens=2048))
    session = Session("session-1")
    for number in range(200):
        session = memory.remember(
            session, turn(number, words=20), intent="shipping", slots={}, handed_over=False
        )
        session = saved(store, session)
    assert session.turn_count == 200
    assert session.version == 200
    assert 2 <= len(session.turns) < 30
    assert session.turns[-1].turn_id == "turn-199"
    # The summary keeps its newest lines: the oldest turns rolled out of it.
    assert "问题 0 " not in session.summary
    assert session.summary.splitlines()[-1].startswith(f"- 问题 {199 - len(session.turns)} ")


def test_dynamodb_item_size_is_bounded(dynamodb: Any) -> None:
    store = DynamoDBSessionStore(TABLE, client=dynamodb, ttl=timedelta(hours=72))
    memory = Memory(MemoryPolicy(budget_tokens=2048))
    session = Session("session-1")
    sizes = []
    for number in range(150):
        session = memory.remember(
            session, turn(number, words=30), intent="shipping", slots={}, handed_over=False
        )
        store.save(session)
        session = replace(session, version=session.version + 1)
        item = dynamodb.get_item(TableName=TABLE, Key={"session_id": {"S": "session-1"}})["Item"]
        sizes.append(len(item["body"]["S"].encode()))
    # It grows while the window fills, then stays flat, far below DynamoDB's 400 KB.
    assert max(sizes[-50:]) < 40_000
    assert max(sizes[-50:]) <= max(sizes[50:100]) * 1.1


class Clock:
    """The time a store reads, moved on by the test."""

    def __init__(self, now: datetime = AT) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", "dynamodb"])
def clocked(request: pytest.FixtureRequest) -> tuple[SessionStore, Clock]:
    """A store of each kind with a 72-hour TTL, reading the test's clock."""
    clock = Clock()
    if request.param == "sqlite":
        return SqliteSessionStore(":memory:", ttl=timedelta(hours=72), clock=clock), clock
    client = request.getfixturevalue("dynamodb")
    return DynamoDBSessionStore(TABLE, client=client, ttl=timedelta(hours=72), clock=clock), clock


def test_a_session_expires_its_ttl_after_its_last_save(
    clocked: tuple[SessionStore, Clock],
) -> None:
    store, clock = clocked
    # Given a session saved, then saved again a day later
    first = saved(store, Session("session-1", turns=[turn(1)], turn_count=1))
    clock.now += timedelta(hours=24)
    saved(store, replace(first, turns=[turn(1), turn(2)], turn_count=2))

    # Then it is there until 72 hours after the second save, and reads as absent from then on
    clock.now += timedelta(hours=72) - timedelta(seconds=1)
    assert store.get("session-1") is not None
    clock.now += timedelta(seconds=1)
    assert store.get("session-1") is None

    # And a new session may take its place (the expired one counts for nothing, its version
    # included), though DynamoDB has not deleted the item yet
    renewed = saved(store, Session("session-1", turns=[turn(9)], turn_count=1))
    assert (renewed.version, [t.turn_id for t in renewed.turns]) == (1, ["turn-9"])


def test_dynamodb_sessions_expire_through_the_table_ttl(dynamodb: Any) -> None:
    clock = Clock(AT + timedelta(hours=5))
    store = DynamoDBSessionStore(TABLE, client=dynamodb, ttl=timedelta(hours=72), clock=clock)
    store.save(Session("session-1", turns=[turn(1)]))
    item = dynamodb.get_item(TableName=TABLE, Key={"session_id": {"S": "session-1"}})["Item"]
    expected = int((AT + timedelta(hours=5 + 72)).timestamp())
    assert item["expires_at"] == {"N": str(expected)}


def test_an_item_of_the_earlier_turn_list_shape_is_read_and_replaced(dynamodb: Any) -> None:
    old = [{"S": json.dumps(_turn_json(n))} for n in range(1, 14)]
    dynamodb.put_item(
        TableName=TABLE,
        Item={
            "session_id": {"S": "session-1"},
            "turns": {"L": old},
            "handed_over": {"BOOL": False},
        },
    )
    store = DynamoDBSessionStore(TABLE, client=dynamodb, ttl=timedelta(hours=72))
    session = store.get("session-1")
    assert session is not None
    assert session.version == 0
    assert [t.turn_id for t in session.turns] == [f"turn-{n}" for n in range(4, 14)]
    stored = saved(store, replace(session, turns=session.turns[-2:]))
    assert stored.version == 1
    item = dynamodb.get_item(TableName=TABLE, Key={"session_id": {"S": "session-1"}})["Item"]
    assert "turns" not in item


def _turn_json(number: int) -> dict[str, Any]:
    t = turn(number)
    return {
        "turn_id": t.turn_id,
        "message": t.message,
        "answer": t.answer,
        "language": t.language,
        "outcome": t.outcome,
        "intent": t.intent,
        "at": t.at.isoformat(),
        "sources": list(t.sources),
    }


def test_a_missing_table_is_a_dependency_failure(dynamodb: Any) -> None:
    store = DynamoDBSessionStore("no-such-table", client=dynamodb, ttl=timedelta(hours=1))
    with pytest.raises(DependencyUnavailable):
        store.get("session-1")
    with pytest.raises(DependencyUnavailable):
        store.save(Session("session-1", turns=[turn(1)]))


def test_the_dynamodb_client_gives_up_in_seconds_not_minutes() -> None:
    store = DynamoDBSessionStore("sessions", ttl=timedelta(hours=1))
    config = store._client.meta.config
    assert config.connect_timeout + config.read_timeout <= 3
    assert config.retries["total_max_attempts"] <= 3


def test_the_local_store_takes_the_ttl_the_dynamodb_one_is_given(tmp_path: Any) -> None:
    import sqlite3
    import time

    from kefu.bootstrap import build_sessions
    from kefu.settings import Settings

    # Given the session TTL set to one hour, as a deployment sets it for DynamoDB
    settings = Settings(data_dir=tmp_path, session_ttl_hours=1)
    local = build_sessions(settings)
    cloud = build_sessions(
        settings.model_copy(update={"sessions": "dynamodb", "sessions_table": TABLE})
    )

    # When the local stack saves a session
    before = time.time()
    local.save(Session("session-1", turns=[turn(1)]))

    # Then it expires an hour later, as the DynamoDB store's sessions do
    with sqlite3.connect(settings.sessions_path) as db:
        (expires_at,) = db.execute("SELECT expires_at FROM conversations").fetchone()
    assert before + 3600 <= expires_at <= time.time() + 3600
    assert isinstance(cloud, DynamoDBSessionStore)
    assert cloud._ttl == timedelta(hours=1)
