"""The escalation Lambda: hand-overs in, through SQS; tickets completed and the helpdesk told.

Each SQS message names a ticket the chat function wrote (`kefu.tickets.HandoverMessage`), or
carries a message the customer wrote to a human that the ticket store could not take at once
(appended here; redelivered until the ticket exists). The handler completes a hand-over from
the session (the masked transcript, summary, intent, slots, sources) and tells every helpdesk
channel (SNS, the signed webhook). A record that fails fails alone: a
malformed message or a channel that stays down is reported back to SQS, which redelivers it
until maxReceiveCount moves it to the DLQ; the ticket stays stored and visible to agents.
Redeliveries of a hand-over already announced are skipped by idempotency records (DynamoDB) and,
locally, by the ticket itself: a completed ticket is not completed again and a channel already
told is not told twice.

`sweep` runs on a schedule: it queues again the tickets still pending (a send that failed, a
message that was lost).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import timedelta
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Json

from kefu.bootstrap import build_notifiers, get_desk, get_settings
from kefu.errors import DependencyUnavailable
from kefu.observability import emit, logger, metrics, tracer
from kefu.ports import Notifier
from kefu.tickets import HandoverMessage

# One hand-over, or one forwarded customer message: redeliveries carry the same key.
IDEMPOTENCY = IdempotencyConfig(
    event_key_jmespath="[kind, ticket_id, turn_id]",
    raise_on_no_idempotency_key=True,
    expires_after_seconds=24 * 60 * 60,
)


class HandoverRecord(SqsRecordModel):
    """An SQS record whose body is a hand-over message."""

    body: Json[HandoverMessage]


# The channels are built again after this long: a rotated webhook secret is picked up (the
# secret itself is cached as long by Powertools' parameters utility).
NOTIFIERS_MAX_AGE_SECONDS = 300.0
# What one record may take at worst: a webhook's four attempts of 5 s and their pauses (23.5 s)
# and the SNS publish. A record that would start with less left in the invocation is handed
# back to SQS instead, so a webhook that hangs never times out the whole batch.
RECORD_BUDGET_MS = 30_000

_invocation: ContextVar[LambdaContext | None] = ContextVar("escalation_invocation", default=None)


class _Channels:
    """The helpdesk channels, built on first use and again once `max_age` seconds old."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._built: tuple[float, list[Notifier]] | None = None

    def __call__(self) -> list[Notifier]:
        now = time.monotonic()
        if self._built is None or now - self._built[0] > self.max_age:
            self._built = (now, build_notifiers(get_settings()))
        return self._built[1]

    def cache_clear(self) -> None:
        self._built = None


_notifiers = _Channels(NOTIFIERS_MAX_AGE_SECONDS)


def escalate(handover: HandoverMessage) -> dict[str, Any]:
    """Complete the hand-over's ticket and tell the helpdesk; raises when a channel failed.
    A customer's message forwarded while a human has the conversation joins the ticket."""
    desk = get_desk()
    if handover.kind == "message":
        ticket = desk.deliver(handover)
        return {"ticket_id": ticket.ticket_id, "status": ticket.status, "delivered": True}
    ticket = desk.complete(handover)
    ticket = desk.announce(ticket, _notifiers())
    logger.info(
        "hand-over announced",
        extra={
            "ticket_id": ticket.ticket_id,
            "session_id": ticket.session_id,
            "trigger": ticket.trigger,
            "priority": ticket.priority,
            "notified": ticket.notified,
        },
    )
    return {"ticket_id": ticket.ticket_id, "status": ticket.status, "notified": ticket.notified}


@lru_cache(maxsize=1)
def _escalate_once() -> Callable[..., dict[str, Any]]:
    """`escalate`, skipped for a hand-over already announced (idempotency records in DynamoDB
    when the table is configured; the ticket's own state otherwise). Built on first use."""
    table = get_settings().idempotency_table
    if not table:
        return escalate
    once: Callable[..., dict[str, Any]] = idempotent_function(
        escalate,
        data_keyword_argument="handover",
        persistence_store=DynamoDBPersistenceLayer(table_name=table),
        config=IDEMPOTENCY,
        output_serializer=None,
    )
    return once


@tracer.capture_method
def record_handler(record: HandoverRecord) -> dict[str, Any]:
    context = _invocation.get()
    # A forwarded message tells no channel: only a hand-over can take a webhook's worst case.
    if (
        record.body.kind == "handover"
        and context is not None
        and context.get_remaining_time_in_millis() < RECORD_BUDGET_MS
    ):
        # Reported failed at once, and redelivered: better than the whole batch timing out.
        emit("EscalationDeferred")
        raise DependencyUnavailable("too little time left in this invocation")
    try:
        return _escalate_once()(handover=record.body)
    except Exception:
        # Counted, then raised again: the batch reports this record alone as failed.
        emit("EscalationFailures")
        raise


# A batch whose every record failed is reported record by record too, so each receive counts
# against maxReceiveCount the same way.
processor = BatchProcessor(
    event_type=EventType.SQS, model=HandoverRecord, raise_on_entire_batch_failure=False
)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    IDEMPOTENCY.register_lambda_context(context)
    token = _invocation.set(context)
    try:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    finally:
        _invocation.reset(token)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def sweep(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Queue again the tickets still pending after `sweep_after_seconds`, or marked for it."""
    settings = get_settings()
    swept = get_desk().sweep(older_than=timedelta(seconds=settings.sweep_after_seconds))
    if swept:
        logger.warning("pending hand-overs queued again", extra={"ticket_ids": swept})
    emit("TicketsSwept", len(swept))
    return {"swept": swept}
