"""The local stand-in for SQS's event source mapping: drains the SQLite-backed escalation queue
into the escalation Lambda's own handler, in-process, and runs the sweeper on its schedule.

As in AWS, a batch reports its failed records; they become visible again after the visibility
timeout and, after `max_receives` receives, move to the queue's dead-letter table.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from kefu.adapters.queues import QueuedMessage, SqliteQueue
from kefu.observability import logger

QUEUE_ARN = "arn:aws:sqs:local:000000000000:kefu-escalation"


class LocalContext:
    """The parts of the Lambda context object that Powertools reads."""

    function_name = "kefu-escalation-local"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:local:000000000000:function:kefu-escalation-local"

    def __init__(self) -> None:
        self.aws_request_id = uuid.uuid4().hex

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000


def sqs_event(messages: Sequence[QueuedMessage]) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping delivers for these messages."""
    return {
        "Records": [
            {
                "messageId": message.message_id,
                "receiptHandle": message.receipt_handle,
                "body": message.body,
                "attributes": {
                    "ApproximateReceiveCount": str(message.receive_count),
                    "SentTimestamp": str(int(message.sent_at * 1000)),
                    "SenderId": "kefu-local",
                    "ApproximateFirstReceiveTimestamp": str(int(time.time() * 1000)),
                },
                "messageAttributes": {},
                "md5OfBody": hashlib.md5(message.body.encode(), usedforsecurity=False).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": QUEUE_ARN,
                "awsRegion": "local",
            }
            for message in messages
        ]
    }


def drain_once(queue: SqliteQueue, *, batch_size: int = 10) -> int:
    """Deliver one batch to the escalation handler; delete what it did not report failed.
    Returns how many messages it received."""
    from functions.escalation.handler import lambda_handler

    messages = queue.receive(batch_size)
    if not messages:
        return 0
    response = lambda_handler(sqs_event(messages), LocalContext())
    failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
    for message in messages:
        if message.message_id not in failed:
            queue.delete(message.receipt_handle)
    return len(messages)


class EscalationWorker:
    """A daemon thread: polls the queue every `poll_seconds`, sweeps every `sweep_seconds`."""

    def __init__(
        self, queue: SqliteQueue, *, poll_seconds: float = 0.5, sweep_seconds: float = 60.0
    ) -> None:
        self.queue = queue
        self.poll_seconds = poll_seconds
        self.sweep_seconds = sweep_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kefu-escalation", daemon=True)

    def start(self) -> EscalationWorker:
        # Imported here, on the starting thread: two threads importing the same package at once
        # can each see the other's half-initialised module.
        import functions.escalation.handler  # noqa: F401

        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        from functions.escalation.handler import sweep

        next_sweep = time.monotonic() + self.sweep_seconds
        while not self._stop.is_set():
            try:
                delivered = drain_once(self.queue)
                if time.monotonic() >= next_sweep:
                    sweep(
                        {"source": "kefu.local", "detail-type": "Scheduled Event"}, LocalContext()
                    )
                    next_sweep = time.monotonic() + self.sweep_seconds
            except Exception:
                # The worker outlives any one failure, as the event source mapping does.
                logger.exception("local escalation worker failed; retrying")
                delivered = 0
            if not delivered:
                self._stop.wait(self.poll_seconds)
