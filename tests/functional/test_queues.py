"""The escalation queue: the local SQLite queue behaves as the worker will find SQS behave, and
the SQS adapter sends to a real (moto) queue."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kefu.adapters.queues import SqliteQueue, SqsQueue
from kefu.errors import DependencyUnavailable


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(clock: Clock) -> SqliteQueue:
    return SqliteQueue(":memory:", max_receives=3, visibility_timeout=30, clock=clock)


def bodies(messages: list[Any]) -> list[str]:
    return [m.body for m in messages]


def test_a_received_message_is_invisible_until_its_timeout(
    queue: SqliteQueue, clock: Clock
) -> None:
    # Given two queued messages
    queue.send("first")
    queue.send("second")

    # When a worker receives them
    received = queue.receive()

    # Then it gets both, oldest first, once each, and nobody else sees them for 30 s
    assert bodies(received) == ["first", "second"]
    assert [m.receive_count for m in received] == [1, 1]
    assert received[0].sent_at == clock.now
    assert queue.receive() == []
    clock.advance(29.9)
    assert queue.receive() == []
    assert queue.depth() == 2  # in flight still counts


def test_a_message_not_deleted_comes_back_after_the_timeout(
    queue: SqliteQueue, clock: Clock
) -> None:
    # Given a message a worker received and did not delete (it crashed)
    queue.send("hand-over")
    (first,) = queue.receive()

    # When the visibility timeout passes
    clock.advance(30)
    (again,) = queue.receive()

    # Then the message is delivered again, counted, with a new receipt handle
    assert again.message_id == first.message_id
    assert again.body == "hand-over"
    assert again.receive_count == 2
    assert again.receipt_handle != first.receipt_handle


def test_a_deleted_message_is_gone(queue: SqliteQueue, clock: Clock) -> None:
    queue.send("hand-over")
    (message,) = queue.receive()

    assert queue.delete(message.receipt_handle) is True

    clock.advance(60)
    assert queue.receive() == []
    assert queue.depth() == 0


def test_a_stale_receipt_handle_deletes_nothing(queue: SqliteQueue, clock: Clock) -> None:
    # Given a message received twice: the first worker was too slow
    queue.send("hand-over")
    (slow,) = queue.receive()
    clock.advance(31)
    (fast,) = queue.receive()

    # When the slow worker deletes with its old handle
    deleted = queue.delete(slow.receipt_handle)

    # Then the message stays for the worker that holds it now
    assert deleted is False
    assert queue.depth() == 1
    assert queue.release(slow.receipt_handle) is False
    assert queue.delete(fast.receipt_handle) is True
    assert queue.depth() == 0


def test_a_released_message_is_visible_again_at_once(queue: SqliteQueue) -> None:
    queue.send("hand-over")
    (message,) = queue.receive()

    assert queue.release(message.receipt_handle) is True

    (again,) = queue.receive()
    assert again.message_id == message.message_id
    assert again.receive_count == 2


def test_a_message_received_too_often_goes_to_the_dead_letters(
    queue: SqliteQueue, clock: Clock
) -> None:
    # Given a poison message, and a good one behind it
    queue.send("poison")
    queue.send("good")
    (good,) = [m for m in queue.receive() if m.body == "good"]
    queue.delete(good.receipt_handle)

    # When the poison message is received max_receives (3) times and never deleted
    counts: list[int] = []
    for _ in range(3):
        counts.extend(m.receive_count for m in queue.receive())
        clock.advance(30)

    # Then the next receive moves it to the dead letters instead of returning it
    assert counts == [2, 3]  # its first receive was with the good message
    assert queue.receive() == []
    (dead,) = queue.dead_letters()
    assert (dead.body, dead.receive_count) == ("poison", 3)
    assert queue.depth() == 0


def test_dead_letters_do_not_take_the_place_of_live_messages(
    queue: SqliteQueue, clock: Clock
) -> None:
    # Given two messages received max_receives times, then a fresh one
    queue.send("poison-1")
    queue.send("poison-2")
    for _ in range(3):
        queue.receive()
        clock.advance(30)
    queue.send("fresh")

    # When a worker asks for one message
    received = queue.receive(max_messages=1)

    # Then it gets the fresh one, and the other two are dead
    assert bodies(received) == ["fresh"]
    assert bodies(queue.dead_letters()) == ["poison-1", "poison-2"]


def test_a_receive_returns_at_most_max_messages(queue: SqliteQueue) -> None:
    for number in range(5):
        queue.send(f"message-{number}")

    assert bodies(queue.receive(max_messages=2)) == ["message-0", "message-1"]
    assert bodies(queue.receive(max_messages=10)) == ["message-2", "message-3", "message-4"]


def test_a_zero_visibility_timeout_still_receives_each_message_once_per_call(
    clock: Clock,
) -> None:
    queue = SqliteQueue(":memory:", visibility_timeout=0, clock=clock)
    queue.send("a")
    queue.send("b")

    assert bodies(queue.receive()) == ["a", "b"]
    assert [m.receive_count for m in queue.receive()] == [2, 2]


def test_messages_and_their_state_survive_a_restart(tmp_path: Path, clock: Clock) -> None:
    # Given a queue file with a message in flight and one waiting
    path = tmp_path / "queue" / "escalation.sqlite3"
    before = SqliteQueue(path, clock=clock)
    before.send("in flight")
    before.receive(max_messages=1)
    before.send("waiting")

    # When the local server restarts and opens the file again
    after = SqliteQueue(path, clock=clock)

    # Then both are there, and the one in flight stays invisible until its timeout
    assert after.depth() == 2
    (waiting,) = after.receive()
    assert waiting.body == "waiting"
    after.delete(waiting.receipt_handle)
    clock.advance(30)
    (redelivered,) = after.receive()
    assert (redelivered.body, redelivered.receive_count) == ("in flight", 2)


def test_concurrent_senders_lose_nothing(tmp_path: Path) -> None:
    # Given 8 request threads sending 50 messages each while a worker receives and deletes
    queue = SqliteQueue(tmp_path / "queue.sqlite3")
    senders_done = threading.Event()
    received: list[str] = []

    def send(sender: int) -> None:
        for number in range(50):
            queue.send(f"{sender}-{number}")

    def work() -> None:
        while True:
            finished = senders_done.is_set()
            messages = queue.receive()
            for message in messages:
                received.append(message.body)
                assert queue.delete(message.receipt_handle)
            if finished and not messages:
                return

    worker = threading.Thread(target=work)
    worker.start()
    senders = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join()
    senders_done.set()
    worker.join(timeout=30)

    # Then every message was delivered exactly once and the queue is empty
    assert not worker.is_alive()
    assert sorted(received) == sorted(f"{s}-{n}" for s in range(8) for n in range(50))
    assert queue.depth() == 0


@pytest.fixture
def sqs() -> Any:
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def test_a_hand_over_sent_to_sqs_reaches_the_queue(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="kefu-escalation")["QueueUrl"]

    SqsQueue(url, client=sqs).send('{"ticket_id": "ticket-0001"}')

    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in messages] == ['{"ticket_id": "ticket-0001"}']


def test_a_missing_sqs_queue_is_a_dependency_failure(sqs: Any) -> None:
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/no-such-queue"

    with pytest.raises(DependencyUnavailable):
        SqsQueue(url, client=sqs).send("{}")


def test_the_sqs_client_fails_fast_for_the_chat_turn() -> None:
    config = SqsQueue("https://sqs.us-east-1.amazonaws.com/123456789012/q")._client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (1, 2)
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}
