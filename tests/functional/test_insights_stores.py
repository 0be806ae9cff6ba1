"""Both insights stores keep turn and feedback records the same way; DynamoDB runs against moto
with the month-partitioned table production creates."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kefu.adapters.insights import (
    EXPIRY_ATTRIBUTE,
    PERIOD_KEY,
    SORT_KEY,
    DynamoDBInsights,
    SqliteInsights,
)
from kefu.errors import DependencyUnavailable
from kefu.ports import Insights
from kefu.tickets import FeedbackRecord, TurnRecord

TABLE = "kefu-insights"
# The last minutes of November and the first of December, UTC.
MONTH_END = datetime(2026, 12, 1, tzinfo=UTC)


def turn(number: int, at: datetime, **changes: Any) -> TurnRecord:
    fields: dict[str, Any] = {
        "session_id": f"session-{number % 2}",
        "turn_id": f"turn-{number:03d}",
        "at": at,
        "tenant": "default",
        "language": "zh",
        "outcome": "answered",
        "intent": "shipping",
        "latency_ms": 120.5,
    }
    return TurnRecord(**(fields | changes))


def rating(value: int, at: datetime, **changes: Any) -> FeedbackRecord:
    fields: dict[str, Any] = {
        "session_id": "session-1",
        "at": at,
        "tenant": "default",
        "rating": value,
    }
    return FeedbackRecord(**(fields | changes))


def create_insights_table(client: Any, name: str = TABLE) -> None:
    """The table as the CDK construct creates it: period and sort key, and a TTL."""
    client.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": PERIOD_KEY, "KeyType": "HASH"},
            {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": PERIOD_KEY, "AttributeType": "S"},
            {"AttributeName": SORT_KEY, "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    client.update_time_to_live(
        TableName=name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": EXPIRY_ATTRIBUTE},
    )


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_insights_table(client)
        yield client


@pytest.fixture(params=["sqlite", "dynamodb"])
def insights(request: pytest.FixtureRequest) -> Insights:
    if request.param == "sqlite":
        return SqliteInsights(":memory:")
    return DynamoDBInsights(TABLE, client=request.getfixturevalue("dynamodb"))


def turn_ids(records: list[TurnRecord]) -> list[str]:
    return [r.turn_id for r in records]


def test_a_turn_comes_back_with_every_field(insights: Insights) -> None:
    # Given a declined turn with every field set, recorded in UTC+8
    shanghai = timezone(timedelta(hours=8))
    record = turn(
        1,
        MONTH_END.astimezone(shanghai),
        tenant="acme",
        language="en",
        outcome="declined",
        intent="returns",
        latency_ms=812.25,
        first_turn=True,
        handover_trigger="repeated_failure",
        question="can I return [masked] after 40 days?",
        category="returns",
    )
    insights.record_turn(record)

    # When it is read back
    (stored,) = insights.turns(MONTH_END, MONTH_END + timedelta(seconds=1))

    # Then it is the same record, its time in UTC
    assert stored == record
    assert stored.at.utcoffset() == timedelta(0)


def test_a_rating_comes_back_with_every_field(insights: Insights) -> None:
    record = rating(2, MONTH_END, turn_id="turn-007", comment="太慢了 [masked]")
    insights.record_feedback(record)

    assert insights.feedback(MONTH_END, MONTH_END + timedelta(days=1)) == [record]


def test_records_across_a_month_boundary_are_read_oldest_first(insights: Insights) -> None:
    # Given turns and ratings on both sides of midnight, 1 December, recorded out of order
    offsets = [3, -2, 0, 1, -1, 2]  # minutes from midnight
    for number, minutes in enumerate(offsets):
        insights.record_turn(turn(number, MONTH_END + timedelta(minutes=minutes)))
    insights.record_feedback(rating(5, MONTH_END + timedelta(minutes=1)))
    insights.record_feedback(rating(1, MONTH_END - timedelta(minutes=1)))

    # When the hour around the boundary is read
    since, until = MONTH_END - timedelta(minutes=30), MONTH_END + timedelta(minutes=30)
    turns = insights.turns(since, until)
    ratings = insights.feedback(since, until)

    # Then every record of each kind comes back, oldest first, and only its own kind
    assert [t.at for t in turns] == sorted(MONTH_END + timedelta(minutes=m) for m in offsets)
    assert turn_ids(turns) == [
        "turn-001",
        "turn-004",
        "turn-002",
        "turn-003",
        "turn-005",
        "turn-000",
    ]
    assert [r.rating for r in ratings] == [1, 5]


def test_a_window_includes_its_start_and_excludes_its_end(insights: Insights) -> None:
    for number, minutes in enumerate([-2, -1, 0, 1, 2]):
        insights.record_turn(turn(number, MONTH_END + timedelta(minutes=minutes)))
        insights.record_feedback(rating(number + 1, MONTH_END + timedelta(minutes=minutes)))

    since, until = MONTH_END - timedelta(minutes=1), MONTH_END + timedelta(minutes=1)
    assert turn_ids(insights.turns(since, until)) == ["turn-001", "turn-002"]
    assert [r.rating for r in insights.feedback(since, until)] == [2, 3]
    # A window ending at midnight reads November only; one starting at it, December only
    assert turn_ids(insights.turns(since, MONTH_END)) == ["turn-001"]
    assert turn_ids(insights.turns(MONTH_END, until)) == ["turn-002"]
    assert insights.turns(until, since) == []
    assert insights.turns(since, since) == []


def test_a_window_over_several_months_reads_each(insights: Insights) -> None:
    # Given a turn in each of four months, and one long before
    dates = [datetime(2026, month, 15, tzinfo=UTC) for month in (10, 11, 12)]
    dates += [datetime(2027, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)]
    for number, at in enumerate(dates):
        insights.record_turn(turn(number, at))

    # When mid-October to the first of January (inclusive) is read
    found = insights.turns(
        datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 1, 1, 0, 1, tzinfo=UTC)
    )

    # Then the four months' turns come back, across the year's end
    assert turn_ids(found) == ["turn-000", "turn-001", "turn-002", "turn-003"]


def test_a_turn_recorded_twice_is_kept_once(insights: Insights) -> None:
    # A redelivered record (the same turn at the same time) replaces itself
    insights.record_turn(turn(1, MONTH_END))
    insights.record_turn(turn(1, MONTH_END, latency_ms=99.0))

    (stored,) = insights.turns(MONTH_END, MONTH_END + timedelta(minutes=1))
    assert stored.latency_ms == 99.0


def test_every_rating_is_kept_even_at_the_same_moment(insights: Insights) -> None:
    insights.record_feedback(rating(4, MONTH_END))
    insights.record_feedback(rating(4, MONTH_END))

    assert len(insights.feedback(MONTH_END, MONTH_END + timedelta(minutes=1))) == 2


def test_dynamodb_records_sit_in_their_month_and_expire(dynamodb: Any) -> None:
    # Given a turn at 23:30 on 30 November in UTC-5 (04:30 on 1 December, UTC)
    insights = DynamoDBInsights(TABLE, client=dynamodb, retention_days=30)
    at = datetime(2026, 11, 30, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    insights.record_turn(turn(7, at))

    # Then it is filed under the UTC month, and expires 30 days after it happened
    (item,) = dynamodb.scan(TableName=TABLE)["Items"]
    assert item[PERIOD_KEY] == {"S": "2026-12"}
    assert item[SORT_KEY]["S"] == "turn#2026-12-01T04:30:00.000000+00:00#turn-007"
    assert item[EXPIRY_ATTRIBUTE] == {"N": str(int((at + timedelta(days=30)).timestamp()))}


def test_a_busy_month_is_read_across_pages(dynamodb: Any) -> None:
    # Given more turns in a month than one DynamoDB page holds (1 MB)
    insights = DynamoDBInsights(TABLE, client=dynamodb)
    for number in range(30):
        insights.record_turn(
            turn(number, MONTH_END + timedelta(seconds=number), question="长" * 15_000)
        )

    found = insights.turns(MONTH_END, MONTH_END + timedelta(hours=1))

    assert turn_ids(found) == [f"turn-{n:03d}" for n in range(30)]


def test_the_local_store_keeps_records_across_restarts(tmp_path: Any) -> None:
    path = tmp_path / "data" / "insights.sqlite3"
    SqliteInsights(path).record_turn(turn(1, MONTH_END))

    assert turn_ids(SqliteInsights(path).turns(MONTH_END, MONTH_END + timedelta(days=1))) == [
        "turn-001"
    ]


def test_a_missing_table_is_a_dependency_failure(dynamodb: Any) -> None:
    insights = DynamoDBInsights("no-such-table", client=dynamodb)

    with pytest.raises(DependencyUnavailable):
        insights.record_turn(turn(1, MONTH_END))
    with pytest.raises(DependencyUnavailable):
        insights.record_feedback(rating(5, MONTH_END))
    with pytest.raises(DependencyUnavailable):
        insights.turns(MONTH_END, MONTH_END + timedelta(days=1))
    with pytest.raises(DependencyUnavailable):
        insights.feedback(MONTH_END, MONTH_END + timedelta(days=1))
