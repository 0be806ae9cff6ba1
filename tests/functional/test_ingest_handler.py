"""The ingest Lambda end to end: SQS batches of S3 notifications in, the knowledge index synced.

S3, SQS-shaped events and the idempotency table run against moto; the index is the embedded one
under a temporary folder, with the hashing embedder.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
from moto import mock_aws

from tests.conftest import EVENTS, FIXTURES, LambdaContext, reset_composition_root

BUCKET = "kefu-dev-knowledge"
IDEMPOTENCY_TABLE = "kefu-ingest-idempotency"


def _event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


CREATED = _event("sqs_s3_object_created.json")
REMOVED = _event("sqs_s3_object_removed.json")
TEST_EVENT = _event("sqs_s3_test_event.json")


def _without_spread(body: bytes) -> bytes:
    """A head as an earlier release stored it: the same archive without the spread."""
    import io

    import numpy as np

    with np.load(io.BytesIO(body), allow_pickle=False) as stored:
        kept = {name: stored[name] for name in stored.files if name != "spread_pairs"}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **kept)
    return buffer.getvalue()


def _reset_caches() -> None:
    from functions.ingest import handler, upgrade

    reset_composition_root()
    for cached in (
        handler._s3,
        handler._index,
        handler._embedder,
        handler._apply_change_once,
        upgrade._index,
    ):
        cached.cache_clear()


@dataclass
class KnowledgeBucket:
    """The knowledge bucket in moto, and SQS records announcing what happened to it."""

    s3: Any
    data_dir: Path
    _messages: int = 0

    def upload(self, key: str, source: Path | bytes) -> dict[str, Any]:
        """Put a file, and return the SQS record S3 would send for it."""
        body = source if isinstance(source, bytes) else source.read_bytes()
        put = self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        return self._record(
            CREATED,
            key=key,
            event="ObjectCreated:Put",
            object_fields={
                "size": len(body),
                "eTag": put["ETag"].strip('"'),
                "versionId": put["VersionId"],
            },
        )

    def delete(self, key: str) -> dict[str, Any]:
        """Delete a file (a delete marker: the bucket is versioned), and return its record."""
        deleted = self.s3.delete_object(Bucket=BUCKET, Key=key)
        return self._record(
            REMOVED,
            key=key,
            event="ObjectRemoved:DeleteMarkerCreated",
            object_fields={"versionId": deleted["VersionId"]},
        )

    def _record(
        self, template: dict[str, Any], *, key: str, event: str, object_fields: dict[str, Any]
    ) -> dict[str, Any]:
        self._messages += 1
        record = copy.deepcopy(template["Records"][0])
        record["messageId"] = f"00000000-0000-4000-8000-{self._messages:012d}"
        notification = json.loads(record["body"])
        s3_record = notification["Records"][0]
        s3_record["eventName"] = event
        s3_record["s3"]["object"] = {
            # S3 URL-encodes keys in notifications, spaces as '+'.
            "key": quote_plus(key, safe="/"),
            **object_fields,
            "sequencer": f"0067456A3C7C3E{self._messages:04X}",
        }
        record["body"] = json.dumps(notification)
        return record

    def chunks(self, key: str, *, tenant: str = "default") -> set[str]:
        """The ids of the chunks the index holds for one file."""
        from kefu.bootstrap import build_index
        from kefu.settings import Settings

        return set(build_index(Settings()).fingerprints(tenant, source=key))


Ingest = Callable[..., dict[str, Any]]


def batch(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


@pytest.fixture
def bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KnowledgeBucket]:
    monkeypatch.setenv("KEFU_INDEX", "embedded")
    monkeypatch.setenv("KEFU_EMBEDDER", "hashing")
    monkeypatch.setenv("KEFU_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KEFU_IDEMPOTENCY_TABLE", IDEMPOTENCY_TABLE)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "kefu-ingest")
    (tmp_path / "data").mkdir()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        # The table the KnowledgeBase construct creates: partition key `id`, TTL `expiration`.
        boto3.client("dynamodb", region_name="us-east-1").create_table(
            TableName=IDEMPOTENCY_TABLE,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        _reset_caches()
        yield KnowledgeBucket(s3=s3, data_dir=tmp_path / "data")
    _reset_caches()


@pytest.fixture
def ingest(bucket: KnowledgeBucket) -> Ingest:
    from functions.ingest.handler import lambda_handler

    def call(event: dict[str, Any]) -> dict[str, Any]:
        return dict(lambda_handler(event, LambdaContext("kefu-ingest")))

    return call


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys the handler fetched from the bucket, in order."""
    from functions.ingest import handler

    fetched: list[str] = []
    real_download = handler._download

    def counting_download(change: Any, folder: Path) -> Path | None:
        fetched.append(change.key)
        return real_download(change, folder)

    monkeypatch.setattr(handler, "_download", counting_download)
    return fetched


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sources the handler actually parsed and synced, in order."""
    from functions.ingest import handler

    synced: list[str] = []
    real_sync = handler.sync_source

    def counting_sync(path: Path, **kwargs: Any) -> Any:
        synced.append(kwargs["source"])
        return real_sync(path, **kwargs)

    monkeypatch.setattr(handler, "sync_source", counting_sync)
    return synced


FAQ_IDS = {
    json.loads(line)["id"]
    for line in (FIXTURES / "mini_faq.jsonl").read_text(encoding="utf-8").splitlines()
    if line.strip()
}


def test_an_uploaded_faq_file_lands_in_the_index(
    bucket: KnowledgeBucket, ingest: Ingest, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an FAQ file uploaded to the knowledge bucket
    record = bucket.upload("faq/mini_faq.jsonl", FIXTURES / "mini_faq.jsonl")

    # When its notification arrives
    response = ingest(batch(record))

    # Then every entry is searchable under the file's key, and the metrics say so
    assert response == {"batchItemFailures": []}
    assert bucket.chunks("faq/mini_faq.jsonl") == FAQ_IDS
    metrics = capsys.readouterr().out
    assert '"FilesIngested":[1.0]' in metrics.replace(" ", "")
    assert f'"ChunksWritten":[{float(len(FAQ_IDS))}]' in metrics.replace(" ", "")


def test_the_key_picks_the_format_and_a_url_encoded_name_is_decoded(
    bucket: KnowledgeBucket, ingest: Ingest
) -> None:
    key = "docs/warranty policy.en.md"
    record = bucket.upload(key, FIXTURES / "mini-policy.en.md")
    assert "warranty+policy.en.md" in record["body"]

    assert ingest(batch(record)) == {"batchItemFailures": []}

    assert bucket.chunks(key) == {f"{key}#001", f"{key}#002"}


def test_a_file_under_tenants_belongs_to_that_tenant(
    bucket: KnowledgeBucket, ingest: Ingest
) -> None:
    key = "tenants/acme/faq.jsonl"

    ingest(batch(bucket.upload(key, FIXTURES / "mini_faq.jsonl")))

    assert bucket.chunks(key, tenant="acme") == FAQ_IDS
    assert bucket.chunks(key) == set()


def test_a_redelivered_message_is_not_ingested_twice(
    bucket: KnowledgeBucket, ingest: Ingest, syncs: list[str]
) -> None:
    # Given a change that was ingested once
    record = bucket.upload("faq/mini_faq.jsonl", FIXTURES / "mini_faq.jsonl")
    ingest(batch(record))

    # When SQS delivers the same message again
    response = ingest(batch(record))

    # Then it succeeds without parsing or embedding the file again
    assert response == {"batchItemFailures": []}
    assert syncs == ["faq/mini_faq.jsonl"]
    assert bucket.chunks("faq/mini_faq.jsonl") == FAQ_IDS


def test_the_faq_head_of_each_changed_tenant_is_retrained_once_per_batch(
    bucket: KnowledgeBucket, ingest: Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kb_ingest import pipeline
    from kefu.bootstrap import build_index
    from kefu.head import FaqHead
    from kefu.settings import Settings

    trained: list[str] = []
    real_retrain = pipeline.retrain_head

    def counting_retrain(index: Any, *, tenant: str, **kwargs: Any) -> tuple[int, str]:
        trained.append(tenant)
        return real_retrain(index, tenant=tenant, **kwargs)

    monkeypatch.setattr(pipeline, "retrain_head", counting_retrain)
    first = bucket.upload("faq/mini_faq.jsonl", FIXTURES / "mini_faq.jsonl")
    acme = bucket.upload("tenants/acme/faq.jsonl", FIXTURES / "mini_faq.jsonl")
    policy = bucket.upload("docs/policy.en.md", FIXTURES / "mini-policy.en.md")

    assert ingest(batch(first, acme, policy)) == {"batchItemFailures": []}

    assert trained == ["acme", "default"]
    index = build_index(Settings())
    for tenant in ("acme", "default"):
        stored = index.load_head(tenant)
        assert stored is not None
        assert set(FaqHead.from_bytes(stored).ids) == FAQ_IDS
    # A new version of a file with the same content changes nothing: nothing is retrained
    ingest(batch(bucket.upload("faq/mini_faq.jsonl", FIXTURES / "mini_faq.jsonl")))
    assert trained == ["acme", "default"]


def test_a_batch_retried_after_a_timeout_before_the_head_retrains_it(
    bucket: KnowledgeBucket, ingest: Ingest, monkeypatch: pytest.MonkeyPatch, syncs: list[str]
) -> None:
    from functions.ingest import handler
    from kefu.bootstrap import build_index
    from kefu.head import FaqHead
    from kefu.settings import Settings

    class Timeout(BaseException):
        """The Lambda runtime ending an invocation: nothing after it runs."""

    real_retrain = handler.retrain_changed_heads

    def killed(tenants: list[str]) -> None:
        raise Timeout

    record = bucket.upload("tenants/acme/faq.jsonl", FIXTURES / "mini_faq.jsonl")
    monkeypatch.setattr(handler, "retrain_changed_heads", killed)
    with pytest.raises(Timeout):
        ingest(batch(record))
    index = build_index(Settings())
    assert bucket.chunks("tenants/acme/faq.jsonl", tenant="acme") == FAQ_IDS
    assert index.load_head("acme") is None

    # SQS delivers the batch again: the change is not applied twice, the head is trained
    monkeypatch.setattr(handler, "retrain_changed_heads", real_retrain)
    assert ingest(batch(record)) == {"batchItemFailures": []}

    assert syncs == ["tenants/acme/faq.jsonl"]
    stored = build_index(Settings()).load_head("acme")
    assert stored is not None
    assert set(FaqHead.from_bytes(stored).ids) == FAQ_IDS


def test_a_change_whose_result_cannot_be_recorded_still_retrains_the_head(
    bucket: KnowledgeBucket, ingest: Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aws_lambda_powertools.utilities.idempotency.persistence.base import (
        BasePersistenceLayer,
    )

    from kefu.bootstrap import build_index
    from kefu.head import FaqHead
    from kefu.settings import Settings

    def unavailable(self: Any, data: dict[str, Any], result: dict[str, Any]) -> None:
        raise RuntimeError("idempotency table throttled")

    monkeypatch.setattr(BasePersistenceLayer, "save_success", unavailable)
    record = bucket.upload("tenants/acme/faq.jsonl", FIXTURES / "mini_faq.jsonl")

    # The record fails (SQS retries it), but its chunks are stored and the head follows them
    response = ingest(batch(record))

    assert response == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    assert bucket.chunks("tenants/acme/faq.jsonl", tenant="acme") == FAQ_IDS
    stored = build_index(Settings()).load_head("acme")
    assert stored is not None
    assert set(FaqHead.from_bytes(stored).ids) == FAQ_IDS


def test_a_head_that_cannot_be_retrained_fails_no_record(
    bucket: KnowledgeBucket,
    ingest: Ingest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from kb_ingest import pipeline
    from kefu.errors import DependencyUnavailable

    def failing_retrain(index: Any, *, tenant: str, **kwargs: Any) -> tuple[int, str]:
        raise DependencyUnavailable("index down")

    monkeypatch.setattr(pipeline, "retrain_head", failing_retrain)
    record = bucket.upload("faq/mini_faq.jsonl", FIXTURES / "mini_faq.jsonl")

    # The chunks are stored: a redelivery would be skipped as applied, so the record succeeds
    assert ingest(batch(record)) == {"batchItemFailures": []}
    assert bucket.chunks("faq/mini_faq.jsonl") == FAQ_IDS
    assert "FAQ head not retrained" in caplog.text
    assert '"HeadTrainingFailures":[1.0]' in capsys.readouterr().out.replace(" ", "")


def test_after_an_upgrade_only_the_heads_an_earlier_release_stored_are_retrained(
    bucket: KnowledgeBucket,
    ingest: Ingest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from functions.ingest import upgrade
    from kb_ingest import pipeline
    from kb_ingest.head_training import outdated
    from kefu.bootstrap import build_index
    from kefu.errors import DependencyUnavailable
    from kefu.head import FaqHead
    from kefu.settings import Settings

    files = {t: f"tenants/{t}/faq.jsonl" for t in ("acme", "beta", "gamma")}
    ingest(batch(*(bucket.upload(key, FIXTURES / "mini_faq.jsonl") for key in files.values())))
    index = build_index(Settings())
    current = index.load_head("acme")
    assert current is not None
    earlier = _without_spread(current)
    version = int(index.version)
    index.save_head("acme", earlier, trained_at=version)  # as an earlier release stored them
    index.save_head("gamma", b"not a head", trained_at=version)
    kept = index.load_head("beta")
    retrained: list[str] = []
    real_retrain = pipeline.retrain_head

    def retrain(index: Any, *, tenant: str, **kwargs: Any) -> tuple[int, str]:
        retrained.append(tenant)
        if tenant == "acme":
            raise DependencyUnavailable("meta index throttled")
        return real_retrain(index, tenant=tenant, **kwargs)

    monkeypatch.setattr(pipeline, "retrain_head", retrain)
    capsys.readouterr()

    # One failure does not stop the others, then fails the run (Lambda retries it); the
    # current head is left as it is
    with pytest.raises(upgrade.HeadUpgradeIncomplete, match="1 of 2 outdated FAQ heads"):
        upgrade.lambda_handler({}, LambdaContext("kefu-head-upgrade"))

    assert retrained == ["acme", "gamma"]
    index = build_index(Settings())
    assert index.load_head("beta") == kept
    assert index.load_head("acme") == earlier
    stored = index.load_head("gamma")
    assert stored is not None
    assert not outdated(stored)
    assert set(FaqHead.from_bytes(stored).ids) == FAQ_IDS
    printed = capsys.readouterr().out.replace(" ", "")
    assert '"OutdatedHeads":[2.0]' in printed
    assert '"HeadTrainingFailures":[1.0]' in printed

    # Run again (the next deployment): only what is still outdated is retrained
    monkeypatch.setattr(pipeline, "retrain_head", real_retrain)
    result = upgrade.lambda_handler({}, LambdaContext("kefu-head-upgrade"))
    assert result == {"outdated": ["acme"], "trained": ["acme"]}
    assert upgrade.lambda_handler({}, LambdaContext("kefu-head-upgrade")) == {
        "outdated": [],
        "trained": [],
    }


def test_a_new_version_of_the_same_file_is_ingested_again(
    bucket: KnowledgeBucket, ingest: Ingest, syncs: list[str]
) -> None:
    ingest(batch(bucket.upload("faq/mini_faq.jsonl", FIXTURES / "mini_faq.jsonl")))
    first_entry = (FIXTURES / "mini_faq.jsonl").read_text(encoding="utf-8").splitlines()[0]

    ingest(batch(bucket.upload("faq/mini_faq.jsonl", first_entry.encode())))

    assert syncs == ["faq/mini_faq.jsonl", "faq/mini_faq.jsonl"]
    assert bucket.chunks("faq/mini_faq.jsonl") == {json.loads(first_entry)["id"]}


def test_a_deleted_file_leaves_the_index(bucket: KnowledgeBucket, ingest: Ingest) -> None:
    # Given two files in the index
    ingest(
        batch(
            bucket.upload("faq/mini_faq.jsonl", FIXTURES / "mini_faq.jsonl"),
            bucket.upload("docs/warranty.en.md", FIXTURES / "mini-policy.en.md"),
        )
    )

    # When one is deleted from the bucket
    response = ingest(batch(bucket.delete("faq/mini_faq.jsonl")))

    # Then its chunks are gone and the other file's stay
    assert response == {"batchItemFailures": []}
    assert bucket.chunks("faq/mini_faq.jsonl") == set()
    assert len(bucket.chunks("docs/warranty.en.md")) == 2


def test_a_late_upload_notification_for_a_deleted_file_does_not_bring_it_back(
    bucket: KnowledgeBucket, ingest: Ingest
) -> None:
    # S3 does not order its notifications: the delete may be handled before the upload.
    uploaded = bucket.upload("faq/mini_faq.jsonl", FIXTURES / "mini_faq.jsonl")
    deleted = bucket.delete("faq/mini_faq.jsonl")

    assert ingest(batch(deleted)) == {"batchItemFailures": []}
    assert ingest(batch(uploaded)) == {"batchItemFailures": []}

    assert bucket.chunks("faq/mini_faq.jsonl") == set()


@pytest.mark.parametrize(
    ("key", "content", "reason"),
    [
        ("faq/broken.jsonl", b'{"id": "x", "questions": ["q"]\n', "not an FAQ entry"),
        ("docs/manual.pdf", b"PK\x03\x04 not a PDF", "not a readable PDF"),
    ],
)
def test_a_poison_file_fails_only_its_own_record(
    bucket: KnowledgeBucket,
    ingest: Ingest,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    key: str,
    content: bytes,
    reason: str,
) -> None:
    # Given a batch with a file that cannot be parsed next to a good one
    poison = bucket.upload(key, content)
    good = bucket.upload("faq/mini_faq.jsonl", FIXTURES / "mini_faq.jsonl")

    # When the batch is handled
    response = ingest(batch(poison, good))

    # Then only the poison record goes back to the queue (and, after maxReceiveCount, the DLQ),
    # the good file lands, and the log says which file and why
    assert response == {"batchItemFailures": [{"itemIdentifier": poison["messageId"]}]}
    assert bucket.chunks("faq/mini_faq.jsonl") == FAQ_IDS
    rejected = [r for r in caplog.records if r.getMessage() == "knowledge file rejected"]
    assert len(rejected) == 1
    assert rejected[0].key == key
    assert reason in rejected[0].reason
    assert '"IngestFailures":[1.0]' in capsys.readouterr().out.replace(" ", "")


@pytest.mark.parametrize(
    ("key", "content", "reason"),
    [
        # What the S3 console's "Create folder" writes: an empty object whose key ends in '/'.
        ("faq/", b"", "folder marker"),
        ("faq/contract.docx", b"PK\x03\x04 not a knowledge file", "unsupported format .docx"),
        ("faq/README", b"notes for the editors", "unsupported format (none)"),
    ],
)
def test_a_key_no_loader_reads_is_skipped_without_failing_its_record(
    bucket: KnowledgeBucket,
    ingest: Ingest,
    downloads: list[str],
    syncs: list[str],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    key: str,
    content: bytes,
    reason: str,
) -> None:
    # Given a batch with an object that can hold no knowledge next to a good file
    from kefu.observability import logger

    caplog.set_level(logging.INFO, logger=logger.name)
    skipped = bucket.upload(key, content)
    good = bucket.upload("faq/mini_faq.jsonl", FIXTURES / "mini_faq.jsonl")

    # When the batch is handled
    response = ingest(batch(skipped, good))

    # Then no record goes back to the queue (so nothing reaches the DLQ and its alarm), the
    # skipped object is neither downloaded nor indexed, and the log and metrics say why
    assert response == {"batchItemFailures": []}
    assert downloads == ["faq/mini_faq.jsonl"]
    assert syncs == ["faq/mini_faq.jsonl"]
    assert bucket.chunks(key) == set()
    assert bucket.chunks("faq/mini_faq.jsonl") == FAQ_IDS
    logged = [r for r in caplog.records if r.getMessage() == "knowledge file skipped"]
    assert [(r.key, r.reason) for r in logged] == [(key, reason)]
    metrics = capsys.readouterr().out.replace(" ", "")
    assert '"FilesSkipped":[1.0]' in metrics
    assert "IngestFailures" not in metrics


def test_removing_a_key_no_loader_reads_is_skipped_too(
    bucket: KnowledgeBucket, ingest: Ingest, downloads: list[str]
) -> None:
    bucket.upload("faq/", b"")

    response = ingest(batch(bucket.delete("faq/")))

    assert response == {"batchItemFailures": []}
    assert downloads == []


def test_a_failed_record_is_retried_when_redelivered(
    bucket: KnowledgeBucket, ingest: Ingest, syncs: list[str]
) -> None:
    # A failure leaves no idempotency record behind: the redelivery parses the file again.
    poison = bucket.upload("faq/broken.jsonl", b"not json\n")

    ingest(batch(poison))
    response = ingest(batch(poison))

    assert response == {"batchItemFailures": [{"itemIdentifier": poison["messageId"]}]}
    assert syncs == ["faq/broken.jsonl", "faq/broken.jsonl"]


def test_an_unreadable_message_fails_alone(bucket: KnowledgeBucket, ingest: Ingest) -> None:
    garbled = copy.deepcopy(CREATED["Records"][0])
    garbled["messageId"] = "garbled-0001"
    garbled["body"] = "this is not an S3 notification"
    good = bucket.upload("faq/mini_faq.jsonl", FIXTURES / "mini_faq.jsonl")

    response = ingest(batch(garbled, good))

    assert response == {"batchItemFailures": [{"itemIdentifier": "garbled-0001"}]}
    assert bucket.chunks("faq/mini_faq.jsonl") == FAQ_IDS


def test_the_s3_test_notification_is_skipped_and_succeeds(
    bucket: KnowledgeBucket, ingest: Ingest, syncs: list[str]
) -> None:
    response = ingest(TEST_EVENT)

    assert response == {"batchItemFailures": []}
    assert syncs == []


def test_the_sample_events_match_what_the_handler_parses() -> None:
    from functions.ingest.handler import KnowledgeFileMessage, ObjectChange, S3TestEvent

    created = KnowledgeFileMessage.model_validate(CREATED["Records"][0])
    removed = KnowledgeFileMessage.model_validate(REMOVED["Records"][0])
    test = KnowledgeFileMessage.model_validate(TEST_EVENT["Records"][0])

    assert not isinstance(created.body, S3TestEvent)
    assert not isinstance(removed.body, S3TestEvent)
    assert isinstance(test.body, S3TestEvent)
    change = ObjectChange.from_record(removed.body.Records[0])
    assert (change.key, change.event) == ("faq/mini_faq.jsonl", "ObjectRemoved:DeleteMarkerCreated")
    assert change.etag is None
    assert ObjectChange.from_record(created.body.Records[0]).etag is not None
