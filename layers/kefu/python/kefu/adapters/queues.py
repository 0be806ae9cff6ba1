"""The escalation queue: SQS in AWS, a SQLite-backed queue with SQS's semantics locally.

The local queue is what the local stack's escalation worker reads, so it behaves as the worker
will find SQS behave: a received message is invisible for a while and comes back unless
deleted, each receive hands out a new receipt handle, and a message received too often goes to
a dead-letter table instead (SQS's redrive policy).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from kefu.errors import DependencyUnavailable


class SqsQueue:
    """A `HandoverQueue` sending to an SQS queue."""

    def __init__(self, queue_url: str, *, client: Any = None) -> None:
        if client is not None:
            self._client = client
        self._url = queue_url

    @cached_property
    def _client(self) -> Any:
        """Made at the first call, not at a cold start: the chat turn needs it only to hand
        over."""
        import boto3
        from botocore.config import Config

        # The chat turn retries the hand-over itself (and the sweeper after it): fail fast.
        return boto3.client(
            "sqs",
            config=Config(
                connect_timeout=1,
                read_timeout=2,
                retries={"mode": "standard", "total_max_attempts": 2},
            ),
        )

    def send(self, body: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.send_message(QueueUrl=self._url, MessageBody=body)
        except (ClientError, BotoCoreError) as exc:
            raise DependencyUnavailable("escalation queue did not take the message") from exc


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A message as a receive (or the dead-letter table) gives it. `receipt_handle` is valid
    until the message is received again; a dead letter has none. `sent_at` is on the queue's
    clock (Unix seconds)."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_at: float


class SqliteQueue:
    """A `HandoverQueue` in one SQLite file (or `:memory:`) that can also be received from,
    safely from several threads (request threads send while a worker receives)."""

    def __init__(
        self,
        path: Path | str,
        *,
        max_receives: int = 3,
        visibility_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_receives < 1:
            raise ValueError("max_receives must be at least 1")
        if visibility_timeout < 0:
            raise ValueError("visibility_timeout must not be negative")
        if isinstance(path, Path):
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS messages ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL UNIQUE,"
            " body TEXT NOT NULL, sent_at REAL NOT NULL, receive_count INTEGER NOT NULL,"
            " visible_at REAL NOT NULL, receipt_handle TEXT UNIQUE)"
        )
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages (visible_at, seq)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS dead_letters ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL UNIQUE,"
            " body TEXT NOT NULL, sent_at REAL NOT NULL, receive_count INTEGER NOT NULL,"
            " dead_at REAL NOT NULL)"
        )
        self._max_receives = max_receives
        self._visibility = visibility_timeout
        self._clock = clock
        self._lock = threading.Lock()

    def send(self, body: str) -> None:
        """Queue `body`, visible at once."""
        message_id = str(uuid.uuid4())
        now = self._clock()
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO messages"
                    " (message_id, body, sent_at, receive_count, visible_at, receipt_handle)"
                    " VALUES (?, ?, ?, 0, ?, NULL)",
                    (message_id, body, now, now),
                )
        except sqlite3.Error as exc:
            raise DependencyUnavailable("escalation queue did not take the message") from exc

    def receive(self, max_messages: int = 10) -> list[QueuedMessage]:
        """Up to `max_messages` visible messages, oldest first, each then invisible for the
        visibility timeout. A message already received `max_receives` times is moved to the
        dead letters instead."""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        now = self._clock()
        received: list[QueuedMessage] = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                after = 0
                while len(received) < max_messages:
                    # Walk forward by `seq`: a zero visibility timeout leaves a message visible.
                    rows = self._db.execute(
                        "SELECT seq, message_id, body, sent_at, receive_count FROM messages"
                        " WHERE visible_at <= ? AND seq > ? ORDER BY seq LIMIT ?",
                        (now, after, max_messages - len(received)),
                    ).fetchall()
                    if not rows:
                        break
                    for seq, message_id, body, sent_at, count in rows:
                        after = seq
                        if count >= self._max_receives:
                            self._bury(seq, now)
                            continue
                        handle = uuid.uuid4().hex
                        self._db.execute(
                            "UPDATE messages SET receive_count = ?, visible_at = ?,"
                            " receipt_handle = ? WHERE seq = ?",
                            (count + 1, now + self._visibility, handle, seq),
                        )
                        received.append(
                            QueuedMessage(message_id, handle, body, count + 1, float(sent_at))
                        )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise DependencyUnavailable("escalation queue receive failed") from exc
        return received

    def delete(self, receipt_handle: str) -> bool:
        """Remove the message this handle was given for; False (and nothing removed) when the
        handle is stale: the message was received again since, or is gone."""
        return self._by_handle("DELETE FROM messages WHERE receipt_handle = ?", (receipt_handle,))

    def release(self, receipt_handle: str) -> bool:
        """Make the message visible again now (SQS's ChangeMessageVisibility to 0), for a
        worker that cannot handle it yet. False when the handle is stale."""
        return self._by_handle(
            "UPDATE messages SET visible_at = ? WHERE receipt_handle = ?",
            (self._clock(), receipt_handle),
        )

    def dead_letters(self) -> list[QueuedMessage]:
        """The messages received too often, in the order they died (no receipt handles)."""
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT message_id, body, receive_count, sent_at FROM dead_letters ORDER BY seq"
                ).fetchall()
        except sqlite3.Error as exc:
            raise DependencyUnavailable("escalation queue read failed") from exc
        return [
            QueuedMessage(message_id, "", body, int(count), float(sent_at))
            for message_id, body, count, sent_at in rows
        ]

    def depth(self) -> int:
        """The messages waiting or in flight (dead letters not counted)."""
        try:
            with self._lock:
                (count,) = self._db.execute("SELECT COUNT(*) FROM messages").fetchone()
        except sqlite3.Error as exc:
            raise DependencyUnavailable("escalation queue read failed") from exc
        return int(count)

    def _bury(self, seq: int, now: float) -> None:
        self._db.execute(
            "INSERT INTO dead_letters (message_id, body, sent_at, receive_count, dead_at)"
            " SELECT message_id, body, sent_at, receive_count, ? FROM messages WHERE seq = ?",
            (now, seq),
        )
        self._db.execute("DELETE FROM messages WHERE seq = ?", (seq,))

    def _by_handle(self, statement: str, params: tuple[Any, ...]) -> bool:
        try:
            with self._lock:
                cursor = self._db.execute(statement, params)
        except sqlite3.Error as exc:
            raise DependencyUnavailable("escalation queue write failed") from exc
        return cursor.rowcount == 1
