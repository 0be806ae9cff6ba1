"""Both ticket stores keep hand-over tickets the same way; DynamoDB runs against moto with the
table and indexes production creates."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kefu.adapters.tickets import (
    SESSION_INDEX,
    STATUS_INDEX,
    DynamoDBTicketStore,
    SqliteTicketStore,
)
from kefu.errors import DependencyUnavailable
from kefu.ports import TicketConflict, TicketStore
from kefu.tickets import Ticket, TicketMessage

AT = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
TABLE = "kefu-tickets"


def ticket(
    number: int, *, session: str = "session-1", minutes: float = 0, **changes: Any
) -> Ticket:
    created = AT + timedelta(minutes=minutes)
    return replace(
        Ticket(
            ticket_id=f"ticket-{number:04d}",
            session_id=session,
            trigger="customer_request",
            language="zh",
            created_at=created,
            updated_at=created,
        ),
        **changes,
    )


def create_tickets_table(client: Any, name: str = TABLE) -> None:
    """The table as the CDK construct creates it."""

    def index(name: str, partition: str) -> dict[str, Any]:
        return {
            "IndexName": name,
            "KeySchema": [
                {"AttributeName": partition, "KeyType": "HASH"},
                {"AttributeName": "created_at", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }

    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "ticket_id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": attribute, "AttributeType": "S"}
            for attribute in ("ticket_id", "status", "session_id", "created_at")
        ],
        GlobalSecondaryIndexes=[index(STATUS_INDEX, "status"), index(SESSION_INDEX, "session_id")],
        BillingMode="PAY_PER_REQUEST",
    )


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_tickets_table(client)
        yield client


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest) -> TicketStore:
    if request.param == "sqlite":
        return SqliteTicketStore(":memory:")
    return DynamoDBTicketStore(TABLE, client=request.getfixturevalue("dynamodb"))


def ids(tickets: list[Ticket]) -> list[str]:
    return [t.ticket_id for t in tickets]


def test_a_ticket_comes_back_with_every_field(store: TicketStore) -> None:
    # Given a ticket with every field set, in another time zone than UTC
    shanghai = timezone(timedelta(hours=8))
    full = Ticket(
        ticket_id="ticket-full",
        session_id="session-9",
        trigger="complaint",
        language="en",
        created_at=AT.astimezone(shanghai),
        updated_at=AT + timedelta(minutes=5),
        tenant="acme",
        status="open",
        priority="urgent",
        queued=True,
        needs_sweep=True,
        summary="客户要求退款 (order 20231105-8812)",
        intent="returns",
        slots={"order_id": "20231105-8812", "reason": "size"},
        sources=["returns-01-zh", "policy.md#3"],
        transcript=[
            TicketMessage("m1", "customer", "我要退货", AT),
            TicketMessage("m2", "bot", "好的", AT + timedelta(seconds=3)),
        ],
        messages=[TicketMessage("m3", "agent", "已处理", AT + timedelta(minutes=4), agent="li")],
        notified=["sns", "webhook"],
        closed_at=AT + timedelta(hours=1),
    )

    # When it is created and read back
    assert store.create(full) is True
    stored = store.get("ticket-full")

    # Then it is the same ticket, at version 1
    assert stored == replace(full, version=1)
    assert store.get("ticket-none") is None


def test_creating_a_ticket_twice_keeps_the_first(store: TicketStore) -> None:
    # Given a ticket already created
    assert store.create(ticket(1, summary="first")) is True

    # When a redelivered hand-over creates it again, with other content
    again = store.create(ticket(1, summary="second", status="open"))

    # Then the second create says so and changes nothing
    assert again is False
    stored = store.get("ticket-0001")
    assert stored is not None
    assert (stored.summary, stored.status, stored.version) == ("first", "pending", 1)


def test_a_save_moves_the_version_and_a_stale_save_is_a_conflict(store: TicketStore) -> None:
    # Given a ticket that was read by two agents, and saved by the first
    store.create(ticket(1))
    read = store.get("ticket-0001")
    assert read is not None
    store.save(replace(read, status="open", summary="by the first"))

    # When the second saves the version it read
    with pytest.raises(TicketConflict):
        store.save(replace(read, summary="by the second"))

    # Then the first agent's change stands, at version 2
    stored = store.get("ticket-0001")
    assert stored is not None
    assert (stored.summary, stored.status, stored.version) == ("by the first", "open", 2)


def test_saving_a_ticket_never_created_is_a_conflict(store: TicketStore) -> None:
    with pytest.raises(TicketConflict):
        store.save(ticket(7))
    assert store.get("ticket-0007") is None


def test_tickets_by_status_are_oldest_first_within_the_window(store: TicketStore) -> None:
    # Given pending tickets created over an hour (out of order), and an open one
    for number, minutes in [(3, 30), (1, 0), (4, 45), (2, 15.5)]:
        store.create(ticket(number, minutes=minutes))
    store.create(ticket(5, minutes=20, status="open"))

    # Then each status lists its own tickets, oldest first
    assert ids(store.by_status("pending")) == [
        "ticket-0001",
        "ticket-0002",
        "ticket-0003",
        "ticket-0004",
    ]
    assert ids(store.by_status("open")) == ["ticket-0005"]
    assert store.by_status("closed") == []

    # And a window [since, until) includes its start and excludes its end
    window = store.by_status(
        "pending", since=AT + timedelta(minutes=15.5), until=AT + timedelta(minutes=45)
    )
    assert ids(window) == ["ticket-0002", "ticket-0003"]
    assert ids(store.by_status("pending", since=AT + timedelta(minutes=30))) == [
        "ticket-0003",
        "ticket-0004",
    ]
    assert ids(store.by_status("pending", until=AT + timedelta(minutes=15))) == ["ticket-0001"]
    assert store.by_status("pending", since=AT + timedelta(hours=1)) == []

    # And a limit keeps the oldest
    assert ids(store.by_status("pending", limit=2)) == ["ticket-0001", "ticket-0002"]
    assert ids(store.by_status("pending", since=AT + timedelta(minutes=1), limit=1)) == [
        "ticket-0002"
    ]

    # And newest first, a limit keeps the newest (what the agents' list shows)
    assert ids(store.by_status("pending", limit=2, newest_first=True)) == [
        "ticket-0004",
        "ticket-0003",
    ]


def test_a_window_in_another_time_zone_means_the_same_instants(store: TicketStore) -> None:
    # Given tickets created a minute apart around midnight UTC
    for number in range(3):
        store.create(ticket(number, minutes=14 * 60 - 1 + number))  # 23:59, 00:00, 00:01 UTC

    # When the window is given in UTC+8
    shanghai = timezone(timedelta(hours=8))
    midnight = datetime(2026, 11, 24, 0, 0, tzinfo=UTC).astimezone(shanghai)
    found = store.by_status("pending", since=midnight, until=midnight + timedelta(minutes=1))

    # Then it is the UTC minute from midnight
    assert ids(found) == ["ticket-0001"]


def test_a_status_change_moves_the_ticket_between_lists(store: TicketStore) -> None:
    store.create(ticket(1))
    read = store.get("ticket-0001")
    assert read is not None
    store.save(replace(read, status="closed", closed_at=AT + timedelta(hours=2)))

    assert store.by_status("pending") == []
    assert ids(store.by_status("closed")) == ["ticket-0001"]


def test_a_sessions_tickets_are_oldest_first(store: TicketStore) -> None:
    # Given two hand-overs of one session and one of another
    store.create(ticket(2, minutes=10))
    store.create(ticket(1, minutes=5))
    store.create(ticket(3, session="session-2"))

    # Then each session finds its own
    assert ids(store.by_session("session-1")) == ["ticket-0001", "ticket-0002"]
    assert ids(store.by_session("session-2")) == ["ticket-0003"]
    assert store.by_session("session-3") == []


def test_many_tickets_are_read_across_pages(dynamodb: Any) -> None:
    # Given more pending tickets than one DynamoDB page holds (1 MB)
    store = DynamoDBTicketStore(TABLE, client=dynamodb)
    for number in range(12):
        store.create(ticket(number, minutes=number, summary="长" * 40_000))

    # Then every one is found, in order, and a limit still applies
    assert ids(store.by_status("pending")) == [f"ticket-{n:04d}" for n in range(12)]
    assert len(store.by_status("pending", limit=11)) == 11
    assert len(store.by_session("session-1")) == 12


def test_the_local_store_keeps_tickets_across_restarts(tmp_path: Any) -> None:
    path = tmp_path / "data" / "tickets.sqlite3"
    SqliteTicketStore(path).create(ticket(1))

    assert ids(SqliteTicketStore(path).by_status("pending")) == ["ticket-0001"]


def test_a_missing_table_is_a_dependency_failure(dynamodb: Any) -> None:
    # Given a store pointed at a table that does not exist
    store = DynamoDBTicketStore("no-such-table", client=dynamodb)

    # Then every operation fails as a dependency failure, not a conflict or a "no"
    with pytest.raises(DependencyUnavailable):
        store.create(ticket(1))
    with pytest.raises(DependencyUnavailable):
        store.get("ticket-0001")
    with pytest.raises(DependencyUnavailable):
        store.save(replace(ticket(1), version=1))
    with pytest.raises(DependencyUnavailable):
        store.by_status("pending")
    with pytest.raises(DependencyUnavailable):
        store.by_session("session-1")


def test_the_dynamodb_client_gives_up_in_seconds_not_minutes() -> None:
    store = DynamoDBTicketStore("tickets")
    config = store._client.meta.config
    assert config.connect_timeout + config.read_timeout <= 3
    assert config.retries["total_max_attempts"] <= 3
