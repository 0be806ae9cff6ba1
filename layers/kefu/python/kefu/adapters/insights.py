"""What the improvement loop reads: a record per turn and per rating. SQLite for the local stack,
DynamoDB in AWS.

The DynamoDB table is partitioned by month (`period`, the UTC month of the record), so a
report over some weeks reads a partition or two, and a month's records sort by kind and time
under `key` = `{kind}#{at}#{id}`; items expire through the table's TTL (`expires_at`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from dataclasses import asdict, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from kefu.errors import DependencyUnavailable
from kefu.tickets import FeedbackRecord, TurnRecord

# The DynamoDB table's attributes; the CDK construct uses the same names.
PERIOD_KEY = "period"  # partition key (S): the record's UTC month, "2026-12"
SORT_KEY = "key"  # sort key (S): f"{kind}#{at.isoformat()}#{id}"
EXPIRY_ATTRIBUTE = "expires_at"  # TTL attribute (N, Unix seconds)

TURN = "turn"
FEEDBACK = "feedback"

Record = TypeVar("Record", TurnRecord, FeedbackRecord)


def _utc(at: datetime) -> datetime:
    """`at` in UTC (a naive datetime is taken to be UTC)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _time_key(at: datetime) -> str:
    # Always with microseconds, so the keys sort as the times do.
    return _utc(at).isoformat(timespec="microseconds")


def _record_json(record: TurnRecord | FeedbackRecord) -> str:
    data = asdict(record)
    data["at"] = _time_key(record.at)
    return json.dumps(data, ensure_ascii=False)


def _record_from_json(kind: type[Record], text: str) -> Record:
    data = json.loads(text)
    known = {f.name for f in fields(kind)}
    data = {name: value for name, value in data.items() if name in known}
    data["at"] = datetime.fromisoformat(data["at"])
    return kind(**data)


class SqliteInsights:
    """Turn and feedback records in one SQLite file (or `:memory:`), kept until deleted."""

    def __init__(self, path: Path | str) -> None:
        if isinstance(path, Path):
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # A turn is keyed by its time and id, as in DynamoDB: recording it again replaces it.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS turns ("
            " at TEXT NOT NULL, turn_id TEXT NOT NULL, body TEXT NOT NULL,"
            " PRIMARY KEY (at, turn_id))"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS feedback ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, body TEXT NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS feedback_by_time ON feedback (at, seq)")
        self._lock = threading.Lock()

    def record_turn(self, record: TurnRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO turns (at, turn_id, body) VALUES (?, ?, ?)",
            (_time_key(record.at), record.turn_id, _record_json(record)),
        )

    def record_feedback(self, record: FeedbackRecord) -> None:
        self._write(
            "INSERT INTO feedback (at, body) VALUES (?, ?)",
            (_time_key(record.at), _record_json(record)),
        )

    def turns(self, since: datetime, until: datetime) -> list[TurnRecord]:
        bodies = self._read(
            "SELECT body FROM turns WHERE at >= ? AND at < ? ORDER BY at, turn_id", since, until
        )
        return [_record_from_json(TurnRecord, body) for body in bodies]

    def feedback(self, since: datetime, until: datetime) -> list[FeedbackRecord]:
        bodies = self._read(
            "SELECT body FROM feedback WHERE at >= ? AND at < ? ORDER BY at, seq", since, until
        )
        return [_record_from_json(FeedbackRecord, body) for body in bodies]

    def _write(self, statement: str, params: tuple[Any, ...]) -> None:
        try:
            with self._lock:
                self._db.execute(statement, params)
        except sqlite3.Error as exc:
            raise DependencyUnavailable("insights write failed") from exc

    def _read(self, statement: str, since: datetime, until: datetime) -> list[str]:
        try:
            with self._lock:
                rows = self._db.execute(statement, (_time_key(since), _time_key(until)))
                found = rows.fetchall()
        except sqlite3.Error as exc:
            raise DependencyUnavailable("insights read failed") from exc
        return [str(body) for (body,) in found]


def _months(since: datetime, until: datetime) -> list[str]:
    """The UTC months that [since, until) overlaps, oldest first."""
    first, last = _utc(since), _utc(until) - timedelta(microseconds=1)
    year, month = first.year, first.month
    months: list[str] = []
    while (year, month) <= (last.year, last.month):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


class DynamoDBInsights:
    """Turn and feedback records in one DynamoDB table partitioned by month (see the module
    docstring), each expiring `retention_days` after it happened."""

    def __init__(self, table_name: str, *, client: Any = None, retention_days: int = 400) -> None:
        if client is None:
            import boto3
            from botocore.config import Config

            # Written inside a chat turn, which logs a failure and goes on: fail fast.
            client = boto3.client(
                "dynamodb",
                config=Config(
                    connect_timeout=1,
                    read_timeout=2,
                    retries={"mode": "standard", "total_max_attempts": 3},
                ),
            )
        self._client = client
        self._table = table_name
        self._retention = timedelta(days=retention_days)

    def record_turn(self, record: TurnRecord) -> None:
        self._put(TURN, record, record.turn_id)

    def record_feedback(self, record: FeedbackRecord) -> None:
        self._put(FEEDBACK, record, uuid.uuid4().hex)

    def turns(self, since: datetime, until: datetime) -> list[TurnRecord]:
        return [_record_from_json(TurnRecord, body) for body in self._bodies(TURN, since, until)]

    def feedback(self, since: datetime, until: datetime) -> list[FeedbackRecord]:
        return [
            _record_from_json(FeedbackRecord, body) for body in self._bodies(FEEDBACK, since, until)
        ]

    def _put(self, kind: str, record: TurnRecord | FeedbackRecord, record_id: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        at = _utc(record.at)
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    PERIOD_KEY: {"S": f"{at:%Y-%m}"},
                    SORT_KEY: {"S": f"{kind}#{_time_key(at)}#{record_id}"},
                    "body": {"S": _record_json(record)},
                    EXPIRY_ATTRIBUTE: {"N": str(int((at + self._retention).timestamp()))},
                },
            )
        except (ClientError, BotoCoreError) as exc:
            raise DependencyUnavailable("insights write failed") from exc

    def _bodies(self, kind: str, since: datetime, until: datetime) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        if _utc(since) >= _utc(until):
            return []
        # `{kind}#{since}` sorts before every key at or after `since`, and `{kind}#{until}`
        # after every key before `until` but before those at `until` (they go on with `#id`).
        low, high = f"{kind}#{_time_key(since)}", f"{kind}#{_time_key(until)}"
        bodies: list[str] = []
        for period in _months(since, until):
            request: dict[str, Any] = {
                "TableName": self._table,
                "KeyConditionExpression": "#p = :p AND #k BETWEEN :low AND :high",
                "ExpressionAttributeNames": {"#p": PERIOD_KEY, "#k": SORT_KEY},
                "ExpressionAttributeValues": {
                    ":p": {"S": period},
                    ":low": {"S": low},
                    ":high": {"S": high},
                },
            }
            while True:
                try:
                    page = self._client.query(**request)
                except (ClientError, BotoCoreError) as exc:
                    raise DependencyUnavailable("insights read failed") from exc
                bodies.extend(item["body"]["S"] for item in page.get("Items", ()))
                if "LastEvaluatedKey" not in page:
                    break
                request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return bodies
