"""Both session stores keep a conversation the same way; DynamoDB runs against moto."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kefu.adapters.sessions import DynamoDBSessionStore, SqliteSessionStore
from kefu.errors import DependencyUnavailable
from kefu.models import Turn
from kefu.ports import SessionStore

AT = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
TABLE = "kefu-sessions"


def turn(number: int, outcome: str = "answered") -> Turn:
    return Turn(
        turn_id=f"turn-{number}",
        message=f"问题 {number}",
        answer=f"answer {number}",
        language="zh",
        outcome=outcome,  # type: ignore[arg-type]
        intent="shipping",
        at=AT + timedelta(minutes=number),
        sources=(f"shipping-0{number}-zh",),
    )


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


def test_turns_come_back_in_order_with_every_field(store: SessionStore) -> None:
    store.append("session-1", turn(1), handed_over=False)
    store.append("session-1", turn(2, "handed_over"), handed_over=True)
    session = store.get("session-1")
    assert session is not None
    assert session.turns == [turn(1), turn(2, "handed_over")]
    assert session.handed_over
    assert store.get("session-2") is None


def test_dynamodb_sessions_expire_through_the_table_ttl(dynamodb: Any) -> None:
    store = DynamoDBSessionStore(TABLE, client=dynamodb, ttl=timedelta(hours=72))
    store.append("session-1", turn(1), handed_over=False)
    item = dynamodb.get_item(TableName=TABLE, Key={"session_id": {"S": "session-1"}})["Item"]
    expected = int((AT + timedelta(minutes=1, hours=72)).timestamp())
    assert item["expires_at"] == {"N": str(expected)}


def test_a_missing_table_is_a_dependency_failure(dynamodb: Any) -> None:
    store = DynamoDBSessionStore("no-such-table", client=dynamodb, ttl=timedelta(hours=1))
    with pytest.raises(DependencyUnavailable):
        store.get("session-1")
    with pytest.raises(DependencyUnavailable):
        store.append("session-1", turn(1), handed_over=False)


def test_the_dynamodb_client_gives_up_in_seconds_not_minutes() -> None:
    store = DynamoDBSessionStore("sessions", ttl=timedelta(hours=1))
    config = store._client.meta.config
    assert config.connect_timeout + config.read_timeout <= 3
    assert config.retries["total_max_attempts"] <= 3
