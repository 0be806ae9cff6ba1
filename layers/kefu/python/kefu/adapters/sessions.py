"""Conversation memory: SQLite for the local stack, DynamoDB in AWS."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kefu.errors import DependencyUnavailable
from kefu.models import Session, Turn

# The window of turns a session keeps; older turns are summarised by a later capability.
MAX_TURNS = 50


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


class SqliteSessionStore:
    """Sessions in one SQLite file (or `:memory:`); one row per turn, appended atomically."""

    def __init__(self, path: Path | str) -> None:
        if isinstance(path, Path):
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS sessions (
                session_id TEXT PRIMARY KEY,
                handed_over INTEGER NOT NULL DEFAULT 0,
                updated_at TEXT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS turns (
                session_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                body TEXT NOT NULL,
                PRIMARY KEY (session_id, seq)
            );
            """
        )
        self._lock = threading.Lock()

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            row = self._db.execute(
                "SELECT handed_over FROM sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
            if row is None:
                return None
            bodies = self._db.execute(
                "SELECT body FROM (SELECT seq, body FROM turns WHERE session_id = ? "
                "ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                (session_id, MAX_TURNS),
            ).fetchall()
        turns = [_turn_from_dict(json.loads(body)) for (body,) in bodies]
        return Session(session_id=session_id, turns=turns, handed_over=bool(row[0]))

    def append(self, session_id: str, turn: Turn, *, handed_over: bool) -> None:
        body = json.dumps(_turn_to_dict(turn), ensure_ascii=False)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO sessions (session_id, handed_over, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (session_id) DO UPDATE SET handed_over = excluded.handed_over, "
                    "updated_at = excluded.updated_at",
                    (session_id, int(handed_over), turn.at.isoformat()),
                )
                self._db.execute(
                    "INSERT INTO turns (session_id, seq, body) VALUES (?, "
                    "(SELECT COALESCE(MAX(seq), 0) + 1 FROM turns WHERE session_id = ?), ?)",
                    (session_id, session_id, body),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise DependencyUnavailable("session store write failed") from exc


class DynamoDBSessionStore:
    """Sessions in a DynamoDB table keyed by `session_id`, expiring through the table's TTL.

    A turn is appended with `list_append` in one conditional-free update, so two Lambdas
    answering the same session never overwrite each other's turns.
    """

    def __init__(self, table_name: str, *, client: Any = None, ttl: timedelta) -> None:
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

    def get(self, session_id: str) -> Session | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            item = self._client.get_item(
                TableName=self._table, Key={"session_id": {"S": session_id}}, ConsistentRead=True
            ).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise DependencyUnavailable("session store read failed") from exc
        if item is None:
            return None
        turns = [_turn_from_dict(json.loads(t["S"])) for t in item.get("turns", {}).get("L", [])]
        return Session(
            session_id=session_id,
            turns=turns[-MAX_TURNS:],
            handed_over=bool(item.get("handed_over", {}).get("BOOL", False)),
        )

    def append(self, session_id: str, turn: Turn, *, handed_over: bool) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        body = json.dumps(_turn_to_dict(turn), ensure_ascii=False)
        expires_at = int((turn.at + self._ttl).timestamp())
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"session_id": {"S": session_id}},
                UpdateExpression=(
                    "SET turns = list_append(if_not_exists(turns, :empty), :turn), "
                    "handed_over = :handed_over, updated_at = :now, expires_at = :expires"
                ),
                ExpressionAttributeValues={
                    ":empty": {"L": []},
                    ":turn": {"L": [{"S": body}]},
                    ":handed_over": {"BOOL": handed_over},
                    ":now": {"S": turn.at.isoformat()},
                    ":expires": {"N": str(expires_at)},
                },
            )
        except (ClientError, BotoCoreError) as exc:
            raise DependencyUnavailable("session store write failed") from exc
