"""The export Lambda end to end: EventBridge's monthly scheduled event in, last month's training
examples and knowledge-gap report in the export bucket.

S3 runs in moto; the ticket and insights stores are in-memory fakes put in place of the
configured ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kefu.errors import ConfigurationError
from tests.conftest import LambdaContext, reset_composition_root
from tests.unit.test_improvement import (
    MemoryInsights,
    MemoryTicketStore,
    declined,
    message,
    ticket,
)

BUCKET = "kefu-dev-exports"

# What EventBridge Scheduler's monthly rule (cron(0 2 1 * ? *)) sends on 1 December.
SCHEDULED_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2026-12-01T02:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/kefu-monthly-export"],
    "detail": {},
}


@dataclass
class Stores:
    tickets: MemoryTicketStore
    insights: MemoryInsights


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stores]:
    """November's hand-overs and turns, in fakes the handler builds instead of the real stores."""
    from functions.export import handler

    agent_reply = message("agent", "您好，请致电 13812345678 找物流部门。", 3, agent="li")
    stores = Stores(
        tickets=MemoryTicketStore(
            [
                ticket("tk-nov00001", messages=[message("customer", "包裹丢了", 2), agent_reply]),
                ticket("tk-nov00002"),
                ticket("tk-nov00003", messages=[message("customer", "还在吗", 2)]),
                ticket("tk-open0001", status="open"),
                ticket("tk-oct00001", created_at=datetime(2026, 10, 30, tzinfo=UTC)),
            ]
        ),
        insights=MemoryInsights(
            turns=[
                declined("Do you ship to Mars?", "shipping", 1),
                declined("do you ship to mars?", "shipping", 2),
                declined("Can I pay in gold?", "", 3),
                replace(declined("Old", "shipping"), at=datetime(2026, 10, 5, tzinfo=UTC)),
            ]
        ),
    )
    monkeypatch.setenv("KEFU_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KEFU_EXPORT_BUCKET", BUCKET)
    monkeypatch.setattr(handler, "build_tickets", lambda _: stores.tickets)
    monkeypatch.setattr(handler, "build_insights", lambda _: stores.insights)
    reset_composition_root()
    yield stores
    reset_composition_root()


@pytest.fixture
def s3(stores: Stores) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def _body(s3: Any, key: str) -> str:
    body: bytes = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return body.decode("utf-8")


def test_the_schedule_exports_last_months_examples_and_gaps(
    s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from functions.export.handler import lambda_handler

    # When the schedule fires on 1 December
    result = lambda_handler(SCHEDULED_EVENT, LambdaContext("kefu-export"))

    # Then November's closed tickets answered by an agent are the training examples
    assert result["month"] == "2026-11"
    assert result["tickets"] == 3
    assert result["examples"] == 2
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert keys == ["reports/2026-11/knowledge-gaps.json", "training/2026-11/handovers.jsonl"]
    head = s3.head_object(Bucket=BUCKET, Key="training/2026-11/handovers.jsonl")
    assert head["ContentType"] == "application/x-ndjson"

    lines = _body(s3, "training/2026-11/handovers.jsonl").splitlines()
    examples = [json.loads(line) for line in lines]
    assert [e["metadata"]["ticket_id"] for e in examples] == ["tk-nov00001", "tk-nov00002"]
    for example in examples:
        roles = [m["role"] for m in example["messages"]]
        assert roles[0] == "system"
        assert roles[-1] == "assistant"
        assert all(a != b for a, b in pairwise(roles[1:]))
    # the phone number the agent typed never reaches the bucket
    assert "13812345678" not in "".join(lines)
    assert "请致电 [电话] 找物流部门" in examples[0]["messages"][-1]["content"]

    # and November's declined questions are the knowledge gaps
    gaps = json.loads(_body(s3, "reports/2026-11/knowledge-gaps.json"))
    assert gaps["since"] == "2026-11-01T00:00:00+00:00"
    assert gaps["until"] == "2026-12-01T00:00:00+00:00"
    assert gaps["declined"] == 3
    assert [c["category"] for c in gaps["categories"]] == ["shipping", "uncategorised"]
    assert gaps["categories"][0]["questions"] == [{"question": "Do you ship to Mars?", "count": 2}]

    # and the metric says how many examples went out
    assert '"TrainingExamplesExported":[2.0]' in capsys.readouterr().out.replace(" ", "")


def test_a_month_named_by_hand_is_exported_again(s3: Any) -> None:
    from functions.export.handler import lambda_handler

    result = lambda_handler({"month": "2026-10"}, LambdaContext("kefu-export"))

    assert result["month"] == "2026-10"
    assert result["examples"] == 1
    lines = _body(s3, "training/2026-10/handovers.jsonl").splitlines()
    assert json.loads(lines[0])["metadata"]["ticket_id"] == "tk-oct00001"


def test_an_event_without_a_time_exports_the_month_before_now(s3: Any) -> None:
    from functions.export.handler import lambda_handler
    from kefu.improvement import previous_month

    result = lambda_handler({}, LambdaContext("kefu-export"))

    start, _ = previous_month(datetime.now(UTC))
    assert result["month"] == start.strftime("%Y-%m")


def test_without_insights_only_training_data_is_written(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.export import handler

    monkeypatch.setattr(handler, "build_insights", lambda _: None)

    result = handler.lambda_handler(SCHEDULED_EVENT, LambdaContext("kefu-export"))

    assert result["gaps_key"] is None
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys == ["training/2026-11/handovers.jsonl"]


def test_no_export_bucket_is_a_configuration_error(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.export.handler import lambda_handler

    monkeypatch.delenv("KEFU_EXPORT_BUCKET")
    reset_composition_root()

    with pytest.raises(ConfigurationError, match="KEFU_EXPORT_BUCKET"):
        lambda_handler(SCHEDULED_EVENT, LambdaContext("kefu-export"))
