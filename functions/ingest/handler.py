"""The ingest Lambda: knowledge-bucket notifications in, through SQS; the index kept in sync.

Each SQS message carries one S3 event notification. Whatever the event says, the handler makes the
index match the object as the bucket holds it *now*: a file that exists is synced (changed chunks
replaced, vanished ones removed), a file that is gone has its chunks removed. S3 neither orders nor
deduplicates its notifications, so a late `ObjectRemoved` after a new upload, or a late
`ObjectCreated` after a delete, still leaves the index right.

A record that fails (a file in a readable format with bad content, an index or Bedrock error) fails
alone: the batch reports it back to SQS, which redelivers it until the queue's maxReceiveCount moves
it to the DLQ. Redeliveries of a change already applied are skipped by idempotency records in
DynamoDB. A key that can hold no knowledge (a console "folder", a format no loader reads) is skipped
without being downloaded: retrying it could never succeed, and it must not raise the DLQ alarm.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import unquote_plus

import boto3
from aws_lambda_powertools.metrics import MetricUnit
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
from aws_lambda_powertools.utilities.parser.models import S3Model, S3RecordModel, SqsRecordModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError
from pydantic import BaseModel, Json

from kb_ingest.loaders import LOADERS, InvalidFile, UnsupportedFile
from kb_ingest.pipeline import remove_source, retrain_heads, sync_source
from kefu.bootstrap import build_embedder, build_index, get_settings
from kefu.observability import logger, metrics, tracer
from kefu.ports import Embedder, KnowledgeIndex

# Set by the KnowledgeBase construct. Read here, not in kefu's settings: only this function uses it.
IDEMPOTENCY_TABLE_VARIABLE = "KEFU_IDEMPOTENCY_TABLE"
# `tenants/<tenant>/...` files belong to that tenant; every other key to the default tenant.
TENANT_PREFIX = "tenants"
_MISSING_OBJECT_CODES = frozenset({"404", "NoSuchKey", "NoSuchVersion"})

# One change of one object: S3 gives a new version id (versioned bucket) or sequencer to every
# write and delete, and the same ones to every redelivery of that notification.
IDEMPOTENCY = IdempotencyConfig(
    event_key_jmespath="[bucket, key, event, version_id, etag, sequencer]",
    raise_on_no_idempotency_key=True,
    # S3 may repeat a notification well after the first; a day covers its retries and ours.
    expires_after_seconds=24 * 60 * 60,
)


class S3TestEvent(BaseModel):
    """What S3 sends once when a notification to the queue is configured."""

    Service: Literal["Amazon S3"]
    Event: Literal["s3:TestEvent"]
    Bucket: str


class KnowledgeFileMessage(SqsRecordModel):
    """An SQS record whose body is an S3 event notification (or S3's configuration test)."""

    body: Json[S3Model | S3TestEvent]


class ObjectChange(BaseModel):
    """One knowledge file that changed, as the idempotency key sees it."""

    bucket: str
    key: str
    event: str
    version_id: str | None = None
    etag: str | None = None
    sequencer: str | None = None

    @classmethod
    def from_record(cls, record: S3RecordModel) -> ObjectChange:
        s3_object = record.s3.object or record.s3.get_object
        if s3_object is None:
            raise ValueError(f"{record.eventName} notification names no object")
        return cls(
            bucket=record.s3.bucket.name,
            # Keys arrive URL-encoded, with spaces as '+'.
            key=unquote_plus(s3_object.key),
            event=record.eventName,
            version_id=s3_object.versionId,
            etag=s3_object.eTag,
            sequencer=s3_object.sequencer,
        )


def tenant_of(key: str, default: str) -> str:
    """`tenants/acme/faq.jsonl` belongs to `acme`; `faq/returns.md` to the default tenant."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == TENANT_PREFIX and parts[1]:
        return parts[1]
    return default


@lru_cache(maxsize=1)
def _s3() -> Any:
    return boto3.client("s3")


@lru_cache(maxsize=1)
def _index() -> KnowledgeIndex:
    return build_index(get_settings(), interactive=False)


@lru_cache(maxsize=1)
def _embedder() -> Embedder:
    return build_embedder(get_settings(), interactive=False)


def skip_reason(key: str) -> str | None:
    """Why the object at `key` cannot hold knowledge, or None when a loader reads it.

    Such a key never had chunks in the index, so neither its upload nor its removal changes it.
    """
    if key.endswith("/"):
        # What the S3 console's "Create folder" puts in the bucket: an empty object named `x/`.
        return "folder marker"
    suffix = PurePosixPath(key).suffix.lower()
    if suffix not in LOADERS:
        return f"unsupported format {suffix or '(none)'}"
    return None


def _download(change: ObjectChange, folder: Path) -> Path | None:
    """The object as the bucket holds it now, or None when it no longer exists.

    The file keeps the key's name, suffixes included: they pick the loader (and `.zh.md` the
    language).
    """
    path = folder / PurePosixPath(change.key).name
    try:
        _s3().download_file(change.bucket, change.key, str(path))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _MISSING_OBJECT_CODES:
            return None
        raise
    return path


# Tenants whose chunks this invocation's records changed: their FAQ heads are retrained once,
# after the batch, not once per file.
_changed_tenants: set[str] = set()


def apply_change(change: ObjectChange) -> dict[str, int]:
    """Make the index hold exactly what the object holds now (nothing, if it is gone)."""
    tenant = tenant_of(change.key, get_settings().tenant)
    log = {"key": change.key, "tenant": tenant, "s3_event": change.event}
    with tempfile.TemporaryDirectory(prefix="kefu-ingest-") as folder:
        path = _download(change, Path(folder))
        if path is None:
            removed = remove_source(change.key, index=_index(), tenant=tenant)
            if removed:
                _changed_tenants.add(tenant)
            metrics.add_metric(name="ChunksRemoved", unit=MetricUnit.Count, value=removed)
            logger.info("knowledge file removed", extra={**log, "chunks_removed": removed})
            return {"files": 0, "chunks_written": 0, "chunks_removed": removed}
        try:
            report = sync_source(
                path, source=change.key, index=_index(), embedder=_embedder(), tenant=tenant
            )
        except (InvalidFile, UnsupportedFile) as exc:
            logger.error("knowledge file rejected", extra={**log, "reason": str(exc)})
            raise
    if report.chunks_written or report.chunks_removed:
        _changed_tenants.add(tenant)
    metrics.add_metric(name="FilesIngested", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="ChunksWritten", unit=MetricUnit.Count, value=report.chunks_written)
    metrics.add_metric(name="ChunksRemoved", unit=MetricUnit.Count, value=report.chunks_removed)
    logger.info(
        "knowledge file ingested",
        extra={
            **log,
            "chunks": report.entries,
            "chunks_written": report.chunks_written,
            "chunks_unchanged": report.chunks_unchanged,
            "chunks_removed": report.chunks_removed,
        },
    )
    return {
        "files": 1,
        "chunks_written": report.chunks_written,
        "chunks_removed": report.chunks_removed,
    }


@lru_cache(maxsize=1)
def _apply_change_once() -> Callable[..., dict[str, int]]:
    """`apply_change`, skipped for a change already applied; built on first use, not at import."""
    persistence = DynamoDBPersistenceLayer(table_name=os.environ[IDEMPOTENCY_TABLE_VARIABLE])
    applied: Callable[..., dict[str, int]] = idempotent_function(
        apply_change,
        data_keyword_argument="change",
        persistence_store=persistence,
        config=IDEMPOTENCY,
    )
    return applied


@tracer.capture_method
def record_handler(record: KnowledgeFileMessage) -> None:
    if isinstance(record.body, S3TestEvent):
        logger.info("S3 test notification skipped", extra={"bucket": record.body.Bucket})
        return
    assert isinstance(record.body, S3Model)
    for s3_record in record.body.Records:
        try:
            change = ObjectChange.from_record(s3_record)
            reason = skip_reason(change.key)
            if reason is not None:
                metrics.add_metric(name="FilesSkipped", unit=MetricUnit.Count, value=1)
                # A folder is routine; a file in a format no loader reads is an editor's mistake
                # that would otherwise go unnoticed: it never reaches the knowledge base.
                log = logger.info if change.key.endswith("/") else logger.warning
                log(
                    "knowledge file skipped",
                    extra={"key": change.key, "s3_event": change.event, "reason": reason},
                )
                continue
            applied = _apply_change_once()(change=change)
            # A change applied here marks its tenant as it is applied (even if recording it
            # then fails); a redelivered one returns what it did the first time, so a batch
            # SQS retries after an invocation that ended before retraining (a timeout)
            # retrains the head.
            if applied["chunks_written"] or applied["chunks_removed"]:
                _changed_tenants.add(tenant_of(change.key, get_settings().tenant))
        except Exception:
            # Counted, then raised again: the batch reports this record alone as failed.
            metrics.add_metric(name="IngestFailures", unit=MetricUnit.Count, value=1)
            raise


# A batch whose every record failed is reported like any other, record by record, instead of as
# an invocation error: SQS then counts each receive against maxReceiveCount the same way.
processor = BatchProcessor(
    event_type=EventType.SQS, model=KnowledgeFileMessage, raise_on_entire_batch_failure=False
)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    IDEMPOTENCY.register_lambda_context(context)
    _changed_tenants.clear()
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    retrain_changed_heads(sorted(_changed_tenants))
    return response


def retrain_changed_heads(tenants: list[str]) -> None:
    """Retrain the FAQ heads of the tenants this batch changed. The chunks are already stored:
    a failure is logged and counted, not reported against the records (whose redelivery would
    only retrain again)."""
    if not tenants:
        return
    trained = retrain_heads(_index(), tenants)
    if len(trained) < len(tenants):
        metrics.add_metric(
            name="HeadTrainingFailures", unit=MetricUnit.Count, value=len(tenants) - len(trained)
        )
