"""Conversation memory: SQLite for the local stack, DynamoDB in AWS.

Each session is one record holding what `kefu.memory` keeps (the recent turns, the rolling
summary, the intent and its slots), so it stays bounded however long the conversation runs.
Saves are optimistic: a record carries a version, and a save that finds another version than
the one read raises `SessionConflict` (two requests of one session answered at once); the chat
turn reads again and redoes its change.

A session expires `ttl` (`KEFU_SESSION_TTL_HOURS`) after its last save, in both stores: an
expired one reads as absent, whether or not it is deleted yet (DynamoDB's TTL deletes items
within days of their expiry, SQLite's on the next save), and a new session may take its place.
Each store takes its clock, so that a test can move time on.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kefu.errors import DependencyUnavailable
from kefu.models import Session, Turn
from kefu.ports import SessionConflict


def _turn_to_dict(turn: Turn) -> dict[str, Any]:
    data = asdict(turn)
    data["at"] = turn.at.isoformat()
    data["sources"] = list(turn.sources)
    return data


def _turn_from_dict(data: dict[str, Any]) -> Turn:
    return Turn(
        turn_id=str(data["turn_id"]),
        message=str(data["message"]),
        answer=str(data["answer"]),
        language=data["language"],
        outcome=data["outcome"],
        intent=str(data["intent"]),
        at=datetime.fromisoformat(str(data["at"])),
        sources=tuple(str(s) for s in data.get("sources", ())),
    )


def session_body(session: Session) -> dict[str, Any]:
    """What is stored of a session besides its id and version (JSON-ready)."""
    return {
        "turns": [_turn_to_dict(turn) for turn in session.turns],
        "summary": session.summary,
        "intent": session.intent,
        "slots": dict(session.slots),
        "handed_over": session.handed_over,
        "turn_count": session.turn_count,
        "ticket_id": session.ticket_id,
        "failures": session.failures,
        "escalated": session.escalated,
        "handed_over_at": session.handed_over_at.isoformat() if session.handed_over_at else None,
    }


def session_from_body(session_id: str, version: int, body: dict[str, Any]) -> Session:
    return Session(
        session_id=session_id,
        turns=[_turn_from_dict(turn) for turn in body.get("turns", ())],
        handed_over=bool(body.get("handed_over", False)),
        summary=str(body.get("summary", "")),
        intent=str(body.get("intent", "")),
        slots={str(k): str(v) for k, v in dict(body.get("slots") or {}).items()},
        version=version,
        turn_count=int(body.get("turn_count", len(body.get("turns", ())))),
        ticket_id=str(body.get("ticket_id", "")),
        failures=int(body.get("failures", 0)),
        escalated=bool(body.get("escalated", False)),
        handed_over_at=(
            datetime.fromisoformat(str(body["handed_over_at"]))
            if body.get("handed_over_at")
            else None
        ),
    )


def _now() -> datetime:
    return datetime.now(UTC)


class SqliteSessionStore:
    """Sessions in one SQLite file (or `:memory:`), a row each, expiring `ttl` after their last
    save like the DynamoDB table's (an expired session reads as absent and is deleted on the
    next save)."""

    def __init__(
        self,
        path: Path | str,
        *,
        ttl: timedelta = timedelta(hours=72),
        clock: Callable[[], datetime] = _now,
    ) -> None:
        if isinstance(path, Path):
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS conversations ("
            " session_id TEXT PRIMARY KEY, version INTEGER NOT NULL,"
            " body TEXT NOT NULL, expires_at REAL NOT NULL)"
        )
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            row = self._db.execute(
                "SELECT version, body FROM conversations WHERE session_id = ? AND expires_at > ?",
                (session_id, self._clock().timestamp()),
            ).fetchone()
        if row is None:
            return None
        return session_from_body(session_id, int(row[0]), json.loads(row[1]))

    def save(self, session: Session) -> None:
        body = json.dumps(session_body(session), ensure_ascii=False)
        now = self._clock().timestamp()
        expires_at = now + self._ttl.total_seconds()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                # An expired row is gone for every purpose, versions included.
                self._db.execute("DELETE FROM conversations WHERE expires_at <= ?", (now,))
                row = self._db.execute(
                    "SELECT version FROM conversations WHERE session_id = ?",
                    (session.session_id,),
                ).fetchone()
                if (row[0] if row else 0) != session.version:
                    self._db.execute("ROLLBACK")
                    raise SessionConflict(session.session_id)
                self._db.execute(
                    "INSERT INTO conversations (session_id, version, body, expires_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET "
                    "version = excluded.version, body = excluded.body, "
                    "expires_at = excluded.expires_at",
                    (session.session_id, session.version + 1, body, expires_at),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise DependencyUnavailable("session store write failed") from exc


class DynamoDBSessionStore:
    """Sessions in a DynamoDB table keyed by `session_id`, an item each, expiring through the
    table's TTL (`expires_at`). A save is a conditional put on the version read, so two Lambdas
    answering one session never overwrite each other's turns."""

    def __init__(
        self,
        table_name: str,
        *,
        client: Any = None,
        ttl: timedelta,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        if client is None:
            import boto3
            from botocore.config import Config

            # Sized for a chat turn inside a 29 s Lambda: give up in seconds and degrade, not
            # in botocore's default minute.
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
        self._ttl = ttl
        self._clock = clock

    def get(self, session_id: str) -> Session | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            item = self._client.get_item(
                TableName=self._table, Key={"session_id": {"S": session_id}}, ConsistentRead=True
            ).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise DependencyUnavailable("session store read failed") from exc
        if item is None or self._expired(item):
            return None
        version = int(item.get("version", {}).get("N", "0"))
        if "body" in item:
            return session_from_body(session_id, version, json.loads(item["body"]["S"]))
        # An item an earlier release wrote: a list of turns, appended one per message.
        turns = [json.loads(t["S"]) for t in item.get("turns", {}).get("L", [])]
        handed_over = bool(item.get("handed_over", {}).get("BOOL", False))
        return session_from_body(
            session_id, version, {"turns": turns[-10:], "handed_over": handed_over}
        )

    def save(self, session: Session) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        body = json.dumps(session_body(session), ensure_ascii=False)
        now = self._clock()
        expires_at = int((now + self._ttl).timestamp())
        condition: dict[str, Any]
        if session.version == 0:
            # A new session, or one in place of an expired item TTL has not deleted yet.
            condition = {
                "ConditionExpression": "attribute_not_exists(version) OR expires_at <= :now",
                "ExpressionAttributeValues": {":now": {"N": str(int(now.timestamp()))}},
            }
        else:
            condition = {
                "ConditionExpression": "version = :read",
                "ExpressionAttributeValues": {":read": {"N": str(session.version)}},
            }
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    "session_id": {"S": session.session_id},
                    "version": {"N": str(session.version + 1)},
                    "body": {"S": body},
                    "handed_over": {"BOOL": session.handed_over},
                    "updated_at": {"S": now.isoformat()},
                    "expires_at": {"N": str(expires_at)},
                },
                **condition,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise SessionConflict(session.session_id) from exc
            raise DependencyUnavailable("session store write failed") from exc
        except BotoCoreError as exc:
            raise DependencyUnavailable("session store write failed") from exc

    def _expired(self, item: dict[str, Any]) -> bool:
        """Whether the item's TTL has passed (DynamoDB deletes it within days, not at once)."""
        expires_at = item.get("expires_at", {}).get("N")
        return expires_at is not None and int(expires_at) <= self._clock().timestamp()
