"""Hand-over tickets: SQLite for the local stack, DynamoDB in AWS.

A ticket is one record holding `kefu.tickets.ticket_body`, beside the keys it is looked up by
(its status and its session, each with its creation time, oldest first). Saves are optimistic
like the sessions': a record carries a version, and a save that finds another version than the
one read raises `TicketConflict` (an agent and the escalation function changing one ticket at
once); the caller reads again and redoes its change.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from kefu.errors import DependencyUnavailable
from kefu.ports import TicketConflict
from kefu.tickets import Ticket, TicketStatus, ticket_body, ticket_from_body

# The DynamoDB table's global secondary indexes; the CDK construct creates them by these names.
STATUS_INDEX = "by-status"  # partition `status`, sort `created_at`, projection ALL
SESSION_INDEX = "by-session"  # partition `session_id`, sort `created_at`, projection ALL

_MICROSECOND = timedelta(microseconds=1)


def _created_key(at: datetime) -> str:
    """`at` as the sort key of the indexes: UTC, always with microseconds, so the strings sort
    as the times do. A naive datetime is taken to be UTC."""
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.isoformat(timespec="microseconds")


class SqliteTicketStore:
    """Tickets in one SQLite file (or `:memory:`), a row each, kept until deleted."""

    def __init__(self, path: Path | str) -> None:
        if isinstance(path, Path):
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS tickets ("
            " ticket_id TEXT PRIMARY KEY, status TEXT NOT NULL, session_id TEXT NOT NULL,"
            " created_at TEXT NOT NULL, version INTEGER NOT NULL, body TEXT NOT NULL)"
        )
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS tickets_by_status ON tickets (status, created_at)"
        )
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS tickets_by_session ON tickets (session_id, created_at)"
        )
        self._lock = threading.Lock()

    def create(self, ticket: Ticket) -> bool:
        try:
            with self._lock:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO tickets"
                    " (ticket_id, status, session_id, created_at, version, body)"
                    " VALUES (?, ?, ?, ?, 1, ?)",
                    (
                        ticket.ticket_id,
                        ticket.status,
                        ticket.session_id,
                        _created_key(ticket.created_at),
                        json.dumps(ticket_body(ticket), ensure_ascii=False),
                    ),
                )
        except sqlite3.Error as exc:
            raise DependencyUnavailable("ticket store write failed") from exc
        return cursor.rowcount == 1

    def get(self, ticket_id: str) -> Ticket | None:
        rows = self._select("WHERE ticket_id = ?", (ticket_id,))
        return rows[0] if rows else None

    def save(self, ticket: Ticket) -> None:
        body = json.dumps(ticket_body(ticket), ensure_ascii=False)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute(
                    "SELECT version FROM tickets WHERE ticket_id = ?", (ticket.ticket_id,)
                ).fetchone()
                # A ticket that is not there was not read: only `create` writes a new one.
                if row is None or row[0] != ticket.version:
                    self._db.execute("ROLLBACK")
                    raise TicketConflict(ticket.ticket_id)
                self._db.execute(
                    "UPDATE tickets SET status = ?, session_id = ?, created_at = ?,"
                    " version = ?, body = ? WHERE ticket_id = ?",
                    (
                        ticket.status,
                        ticket.session_id,
                        _created_key(ticket.created_at),
                        ticket.version + 1,
                        body,
                        ticket.ticket_id,
                    ),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise DependencyUnavailable("ticket store write failed") from exc

    def by_status(
        self,
        status: TicketStatus,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Ticket]:
        where = "WHERE status = ?"
        params: list[Any] = [status]
        if since is not None:
            where += " AND created_at >= ?"
            params.append(_created_key(since))
        if until is not None:
            where += " AND created_at < ?"
            params.append(_created_key(until))
        where += (
            " ORDER BY created_at DESC, ticket_id DESC"
            if newest_first
            else " ORDER BY created_at, ticket_id"
        )
        if limit is not None:
            where += " LIMIT ?"
            params.append(max(limit, 0))
        return self._select(where, tuple(params))

    def by_session(self, session_id: str) -> list[Ticket]:
        return self._select("WHERE session_id = ? ORDER BY created_at, ticket_id", (session_id,))

    def _select(self, where: str, params: tuple[Any, ...]) -> list[Ticket]:
        try:
            with self._lock:
                rows = self._db.execute(f"SELECT version, body FROM tickets {where}", params)
                found = rows.fetchall()
        except sqlite3.Error as exc:
            raise DependencyUnavailable("ticket store read failed") from exc
        return [ticket_from_body(json.loads(body), int(version)) for version, body in found]


class DynamoDBTicketStore:
    """Tickets in a DynamoDB table keyed by `ticket_id`, an item each, found by status and by
    session through the `STATUS_INDEX` and `SESSION_INDEX` global secondary indexes. A save is
    a conditional put on the version read."""

    def __init__(self, table_name: str, *, client: Any = None) -> None:
        if client is not None:
            self._client = client
        self._table = table_name

    @cached_property
    def _client(self) -> Any:
        """Made at the first call, not at a cold start: the chat turn needs it only to hand
        over."""
        import boto3
        from botocore.config import Config

        # A hand-over is written inside a chat turn: give up in seconds and let the turn
        # queue the ticket for the sweeper, not in botocore's default minute.
        return boto3.client(
            "dynamodb",
            config=Config(
                connect_timeout=1,
                read_timeout=2,
                retries={"mode": "standard", "total_max_attempts": 3},
            ),
        )

    def create(self, ticket: Ticket) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.put_item(
                TableName=self._table,
                Item=self._item(ticket, version=1),
                ConditionExpression="attribute_not_exists(ticket_id)",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise DependencyUnavailable("ticket store write failed") from exc
        except BotoCoreError as exc:
            raise DependencyUnavailable("ticket store write failed") from exc
        return True

    def get(self, ticket_id: str) -> Ticket | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            item = self._client.get_item(
                TableName=self._table, Key={"ticket_id": {"S": ticket_id}}, ConsistentRead=True
            ).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise DependencyUnavailable("ticket store read failed") from exc
        return None if item is None else self._ticket(item)

    def save(self, ticket: Ticket) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.put_item(
                TableName=self._table,
                Item=self._item(ticket, version=ticket.version + 1),
                # Fails on a missing ticket too: only `create` writes a new one.
                ConditionExpression="version = :read",
                ExpressionAttributeValues={":read": {"N": str(ticket.version)}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise TicketConflict(ticket.ticket_id) from exc
            raise DependencyUnavailable("ticket store write failed") from exc
        except BotoCoreError as exc:
            raise DependencyUnavailable("ticket store write failed") from exc

    def by_status(
        self,
        status: TicketStatus,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Ticket]:
        names = {"#p": "status"}  # a reserved word in expressions
        values: dict[str, Any] = {":p": {"S": status}}
        condition = "#p = :p"
        if since is not None and until is not None:
            if since >= until:
                return []
            # BETWEEN is inclusive; keys carry microseconds, so the last one before `until`
            # is `until` less a microsecond.
            condition += " AND created_at BETWEEN :since AND :last"
            values[":since"] = {"S": _created_key(since)}
            values[":last"] = {"S": _created_key(until - _MICROSECOND)}
        elif since is not None:
            condition += " AND created_at >= :since"
            values[":since"] = {"S": _created_key(since)}
        elif until is not None:
            condition += " AND created_at < :until"
            values[":until"] = {"S": _created_key(until)}
        return self._query(STATUS_INDEX, condition, names, values, limit, forward=not newest_first)

    def by_session(self, session_id: str) -> list[Ticket]:
        return self._query(
            SESSION_INDEX, "session_id = :s", {}, {":s": {"S": session_id}}, limit=None
        )

    def _query(
        self,
        index: str,
        condition: str,
        names: dict[str, str],
        values: dict[str, Any],
        limit: int | None,
        *,
        forward: bool = True,
    ) -> list[Ticket]:
        from botocore.exceptions import BotoCoreError, ClientError

        tickets: list[Ticket] = []
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": forward,
        }
        if names:
            request["ExpressionAttributeNames"] = names
        while limit is None or len(tickets) < limit:
            if limit is not None:
                request["Limit"] = limit - len(tickets)
            try:
                page = self._client.query(**request)
            except (ClientError, BotoCoreError) as exc:
                raise DependencyUnavailable("ticket store read failed") from exc
            tickets.extend(self._ticket(item) for item in page.get("Items", ()))
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return tickets if limit is None else tickets[:limit]

    @staticmethod
    def _item(ticket: Ticket, *, version: int) -> dict[str, Any]:
        return {
            "ticket_id": {"S": ticket.ticket_id},
            "status": {"S": ticket.status},
            "session_id": {"S": ticket.session_id},
            "created_at": {"S": _created_key(ticket.created_at)},
            "version": {"N": str(version)},
            "body": {"S": json.dumps(ticket_body(ticket), ensure_ascii=False)},
        }

    @staticmethod
    def _ticket(item: dict[str, Any]) -> Ticket:
        return ticket_from_body(json.loads(item["body"]["S"]), int(item["version"]["N"]))
