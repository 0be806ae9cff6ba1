"""Writes to the knowledge index: chunks in bounded bulk requests, each write under a KB
version it reserves and then publishes, and the tenants' FAQ heads in the meta index."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
from opensearchpy import helpers

from kefu.adapters.opensearch.client import unavailable
from kefu.adapters.opensearch.mapping import VERSION_DOC, document_id, head_id, rounded
from kefu.errors import DependencyUnavailable, IndexWriteRejected
from kefu.models import Chunk, fingerprint

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from kefu.adapters.opensearch.mapping import IndexSetup
    from kefu.ports import Vectors

_MGET_BATCH = 1_000
# Throttled bulk items are retried this many times (with the helper's backoff) before failing.
_BULK_RETRIES = 3
# The KB version is a counter in the meta index that a write moves on only once its chunks are
# searchable, so no version is readable before the content it stands for (caches key
# on it). A write reserves one past both the published version and the last reservation,
# writes its chunks with it, then publishes: the version moves on, to the reservation if it is
# ahead (a delete publishes reservation 0). Concurrent writes each get their own reservation.
# Not Math.max: painless knows only its double overload, which stored 1.0 and then failed the
# long casts (found against OpenSearch 2.5); the Number casts read such a stored double, and
# JSON integers, alike.
_RESERVE_SCRIPT = (
    "long version = ((Number) ctx._source.version).longValue(); "
    "long reserved = ctx._source.reserved == null ? 0L "
    ": ((Number) ctx._source.reserved).longValue(); "
    "ctx._source.reserved = (version > reserved ? version : reserved) + 1"
)
_PUBLISH_SCRIPT = (
    "long next = ((Number) ctx._source.version).longValue() + 1; "
    "long reserved = ((Number) params.reserved).longValue(); "
    "ctx._source.version = next > reserved ? next : reserved"
)


class IndexWriter:
    """Upserts and deletes a tenant's chunks by their document ids, and stores FAQ heads.
    Bulk writes are split into requests of at most `max_bulk_bytes` and `max_bulk_docs`;
    `refresh` holds the request parameters that make a write wait until it is searchable."""

    def __init__(
        self,
        client: OpenSearch,
        setup: IndexSetup,
        *,
        index: str,
        meta_index: str,
        max_bulk_bytes: int,
        max_bulk_docs: int,
        refresh: dict[str, Any],
    ) -> None:
        self._client = client
        self._setup = setup
        self._index = index
        self._meta_index = meta_index
        self._max_bulk_bytes = max_bulk_bytes
        self._max_bulk_docs = max_bulk_docs
        self._refresh = refresh

    def upsert(self, chunks: Sequence[Chunk], key_vectors: Sequence[Vectors]) -> None:
        if len(chunks) != len(key_vectors):
            raise ValueError("one vector matrix per chunk")
        for chunk, vectors in zip(chunks, key_vectors, strict=True):
            if vectors.shape[0] != 1 + len(chunk.keys):
                raise ValueError(f"chunk {chunk.id}: one vector for content and per key")
        self._setup.ensure_ready()
        doc_ids = [document_id(chunk.tenant, chunk.id) for chunk in chunks]
        stored = self._stored_fingerprints(doc_ids)
        changed = [
            (chunk, doc_id, digest, vectors)
            for chunk, doc_id, vectors in zip(chunks, doc_ids, key_vectors, strict=True)
            if stored.get(doc_id) != (digest := fingerprint(chunk))
        ]
        if not changed:
            return
        written_at = self._reserve_version()
        labels = {doc_id: _label(chunk.tenant, chunk.id) for chunk, doc_id, *_ in changed}
        self._bulk((self._index_action(*entry, written_at) for entry in changed), labels)
        self.publish_version(written_at)

    def delete(self, chunk_ids: Sequence[str], *, tenant: str) -> None:
        if not chunk_ids:
            return
        labels = {document_id(tenant, chunk_id): _label(tenant, chunk_id) for chunk_id in chunk_ids}
        results = self._bulk(
            (({"delete": {"_index": self._index, "_id": doc_id}}, None) for doc_id in labels),
            labels,
        )
        if any(result.get("result") == "deleted" for result in results):
            self.publish_version(0)

    def save_head(self, tenant: str, head: bytes | None, *, trained_at: int) -> bool:
        """Written through the meta index's `_bulk` (and read through its `_mget`): the access
        policies then name fixed paths, not one document path per tenant. `trained_at` is the
        document's external version (`external_gte`): a head trained on an older KB is
        refused by the cluster with a version conflict, atomically."""
        self._setup.ensure_ready()
        doc_id = head_id(tenant)
        # A delete carries the version too: without it, even a delete of a missing document
        # moves the tombstone's version on, and the next head would conflict with it.
        versioned = {"_id": doc_id, "version": trained_at, "version_type": "external_gte"}
        if head is None:
            body: list[dict[str, Any]] = [{"delete": versioned}]
        else:
            document = {"tenant": tenant, "head": base64.b64encode(head).decode("ascii")}
            if len(document["head"]) > self._max_bulk_bytes:
                raise IndexWriteRejected(
                    f"the FAQ head of tenant {tenant} is {len(document['head']):,} bytes, more "
                    f"than a request may carry ({self._max_bulk_bytes:,})"
                )
            body = [{"index": versioned}, document]
        with unavailable("head write"):
            response = self._client.bulk(body=body, index=self._meta_index, **self._refresh)
        [(op_type, result)] = response["items"][0].items()
        status = int(result.get("status", 500))
        if status == 409 or (op_type == "delete" and status == 404):
            return False  # a newer KB's head is stored, or there was none to remove
        if status >= 300:
            message = f"the FAQ head of tenant {tenant} was not written: {status} {result}"
            if status == 429 or status >= 500:
                raise DependencyUnavailable(message)
            raise IndexWriteRejected(message)
        self.publish_version(0)
        return True

    def _index_action(
        self, chunk: Chunk, doc_id: str, digest: str, vectors: Vectors, written_at: int
    ) -> tuple[dict[str, Any], str]:
        """A bulk action and its document, serialised once here so its size can be checked."""
        serializer = self._client.transport.serializer
        action = {"index": {"_index": self._index, "_id": doc_id}}
        source: str = serializer.dumps(_document(chunk, digest, vectors, written_at))
        size = len(serializer.dumps(action).encode()) + len(source.encode()) + 2
        if size > self._max_bulk_bytes:
            raise IndexWriteRejected(
                f"chunk {chunk.id} is {size} bytes, more than a bulk request may carry "
                f"({self._max_bulk_bytes}); split it into smaller chunks"
            )
        return action, source

    def _bulk(
        self, actions: Iterable[tuple[dict[str, Any], str | None]], labels: dict[str, str]
    ) -> list[dict[str, Any]]:
        """Send actions in requests bounded by bytes and count; return each item's result.

        A throttled or failed shard is the cluster's trouble (DependencyUnavailable); any other
        refused item is the data's (IndexWriteRejected), reported by the chunk's `labels` entry
        rather than its hashed document id. Deleting a missing id is no failure.
        """
        results: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        with unavailable("bulk write"):
            # Posted to `<index>/_bulk`, not the domain's `/_bulk`: access policies can then
            # allow the ingest role to write this index and no other.
            for ok, item in helpers.streaming_bulk(
                self._client,
                actions,
                index=self._index,
                chunk_size=self._max_bulk_docs,
                max_chunk_bytes=self._max_bulk_bytes,
                expand_action_callback=_already_expanded,
                raise_on_error=False,
                max_retries=_BULK_RETRIES,
                **self._refresh,
            ):
                [(op_type, result)] = item.items()
                if ok or (op_type == "delete" and result.get("status") == 404):
                    results.append(result)
                else:
                    failures.append(result)
        if failures:
            summary = "; ".join(
                f"{labels.get(str(failure.get('_id')), failure.get('_id'))}: "
                f"{failure.get('status')} {failure.get('error')}"
                for failure in failures[:5]
            )
            message = f"{len(failures)} of the chunks were not written ({summary})"
            statuses = [int(failure.get("status", 500)) for failure in failures]
            if any(status == 429 or status >= 500 for status in statuses):
                raise DependencyUnavailable(message)
            raise IndexWriteRejected(message)
        return results

    def _stored_fingerprints(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """The fingerprints of the documents that exist among `doc_ids`, by document id."""
        stored: dict[str, str] = {}
        with unavailable("read"):
            for start in range(0, len(doc_ids), _MGET_BATCH):
                batch = list(doc_ids[start : start + _MGET_BATCH])
                response = self._client.mget(
                    index=self._index, body={"ids": batch}, _source_includes=["fingerprint"]
                )
                for doc in response["docs"]:
                    if doc.get("found"):
                        stored[doc["_id"]] = doc["_source"]["fingerprint"]
        return stored

    def _reserve_version(self) -> int:
        """The KB version the chunks of this write carry; readers see it once published."""
        with unavailable("version update"):
            response = self._client.update(
                index=self._meta_index,
                id=VERSION_DOC,
                body={
                    "script": {"source": _RESERVE_SCRIPT, "lang": "painless"},
                    "upsert": {"version": 0, "reserved": 1},
                },
                retry_on_conflict=5,
                _source=True,
            )
        return int(response["get"]["_source"]["reserved"])

    def publish_version(self, reserved: int) -> None:
        """Move the KB version on, to `reserved` if that is ahead (0: by one)."""
        with unavailable("version update"):
            self._client.update(
                index=self._meta_index,
                id=VERSION_DOC,
                body={
                    "script": {
                        "source": _PUBLISH_SCRIPT,
                        "lang": "painless",
                        "params": {"reserved": reserved},
                    },
                    "upsert": {"version": max(reserved, 1)},
                },
                retry_on_conflict=5,
                **self._refresh,
            )


def _document(chunk: Chunk, digest: str, vectors: Vectors, written_at: int) -> dict[str, Any]:
    """The document a chunk is stored as (`vectors`: content row, then one per key), written
    at KB version `written_at`."""
    rows = np.asarray(vectors, dtype=np.float64)
    doc: dict[str, Any] = {
        **asdict(chunk),
        "keys": list(chunk.keys),
        "kb_version": str(written_at),
        "fingerprint": digest,
        "content_vector": rounded(rows[0]),
    }
    if chunk.keys:
        scope = {"tenant": chunk.tenant, "lang": chunk.lang, "category": chunk.category}
        doc["questions"] = [{"vector": rounded(row), **scope} for row in rows[1:]]
        # An FAQ entry's prototype: the normalised mean of its questions.
        centroid = rows[1:].sum(axis=0)
        norm = float(np.linalg.norm(centroid))
        doc["centroid_vector"] = rounded(centroid / norm if norm else centroid)
    return doc


def _label(tenant: str, chunk_id: str) -> str:
    """A chunk as an error message names it: its document id is a hash."""
    return f"{chunk_id} (tenant {tenant})"


def _already_expanded(
    action: tuple[dict[str, Any], str | None],
) -> tuple[dict[str, Any], str | None]:
    return action
