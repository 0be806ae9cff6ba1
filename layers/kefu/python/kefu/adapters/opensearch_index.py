"""The knowledge index on Amazon OpenSearch Service: k-NN vectors and BM25 text in one index.

One document per chunk, under a document id derived from the chunk's tenant and id
(`document_id`: the SHA-256 of both, in hex), so that two tenants' chunks of the same id (the
same FAQ file ingested for both) are two documents rather than one overwriting the other. The
chunk's id stays a keyword field, which results and fingerprints are keyed by. A document holds
the chunk's own fields (`id`, `kind`, `lang`, `tenant`, `category`, `source` as keywords;
`title`, `section`, `text`, `keys` as text analysed by the `english` analyzer, each with a `.zh`
sub-field analysed for Chinese), its `fingerprint`, and three kinds of vector, mirroring the
embedded index's views of a chunk:

- `content_vector`: the vector of the chunk's heading and text;
- `questions`: a nested field, one nested document per key (an FAQ entry's questions, an
  out-of-scope entry's examples), each with its vector and a copy of the tenant, language and
  category so that a k-NN filter inside the nested query can restrict the questions searched;
  a nested query with `score_mode: max` scores a chunk by its closest question (`nearest`);
- `centroid_vector`: the normalised mean of the questions (an FAQ entry's prototype).

Vectors are unit length and compared by inner product (`faiss` HNSW, `innerproduct`), which on
unit vectors is the cosine that the embedded index uses.

A search takes two requests. The first gathers candidates with one `hybrid` query of four
sub-queries, each filtered by tenant, language and category (as efficient k-NN filters, or a
BM25 filter): the closest questions (a nested k-NN query), the closest centroids, the closest
contents, and the best BM25 matches over the text fields. It runs through the index's search
pipeline (`<name>-hybrid`), whose `normalization-processor` min-max normalises each
sub-query's scores and combines them by an arithmetic mean with equal weights (no view is
favoured: which chunks get through is all this stage decides). The fused top `candidates`
are the candidates.

The second request scores exactly those candidates with the k-NN scoring script, one named
query per view, plus the BM25 query as a named query, and returns each one's score
(`include_named_queries_score`, OpenSearch 2.13 or later). The fused scores are discarded:
they are relative to the other hits of the same search, while the answer-or-decline decision
compares absolute cosines (`dense` against thresholds calibrated on the embedded index,
`nearest` of FAQ entries against out-of-scope examples). The blend is then computed here
exactly as `EmbeddedIndex` does it: an FAQ entry's `dense` is `(nearest + centroid_weight *
centroid + content_weight * content) / (1 + centroid_weight + content_weight)`, an
out-of-scope entry's and a passage's is their `nearest`; `lexical` is a chunk's BM25 score
relative to the best BM25 score among the candidates. Scoring exactly also keeps HNSW's
approximation out of the scores: it only decides which chunks are considered.

The pipeline is created (or corrected) by `ensure_pipeline`, which `ensure_index` calls: the
ingest side, whose role may write it. A search never creates it: the chat role may only
search, and a search before the first ingest finds neither index nor pipeline
(`IndexNotReady`). The `hybrid` query must be the top-level query and takes at most five
sub-queries; its own `filter` needs OpenSearch 3.0, so each sub-query carries the filter, and
`pagination_depth` (2.19) is not needed: from 0, each sub-query takes `size` hits per shard.

Every request names documents by their derived id or filters by tenant: the fingerprint `mget`
before an upsert, the bulk index and delete actions, `delete(ids, tenant=...)`, the candidate
sub-queries of a search (and so the ids its second request scores), and `fingerprints`.

The KB version is a counter in a separate meta index (`<name>-meta`). An upsert that changes
something first reserves a version (a scripted update returning `reserved`: one past the larger
of the version and the last reservation), writes the changed chunks with it as their
`kb_version`, then publishes it (`version` becomes the larger of itself plus one and the
reservation); a delete that removed something only publishes. One write at a time, the chunks
carry the version the index has once the upsert returns. Concurrent writes each get their own
reservation, and since a version is published only after its write and always moves the
counter on, no version is readable before the content it stands for is searchable (the answer
cache keys on it).

Limitations: an OpenSearch Serverless vector collection accepts neither custom document ids nor
`refresh`, so this index (which upserts by its own document ids) needs a managed domain;
`connect` signs for both. `ensure_index` creates a missing index, and adds `kb_version` to the
mapping of one created before it; it does not otherwise migrate one with another mapping, or one
written when the document id was the chunk id alone: ingest into a new index instead. Chunks
written before `kb_version` was stored read back with an empty one.

`connect` defaults to a chat turn's budget (`INTERACTIVE_TIMEOUT`, `INTERACTIVE_RETRIES`), so
that a slow cluster degrades the turn well inside API Gateway's 29 seconds; ingestion passes
`BATCH_TIMEOUT` and `BATCH_RETRIES`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from opensearchpy import AWSV4SignerAuth, OpenSearch, RequestsHttpConnection, helpers
from opensearchpy.exceptions import NotFoundError, RequestError, TransportError

from kefu.errors import (
    ConfigurationError,
    DependencyUnavailable,
    IndexNotReady,
    IndexWriteRejected,
)
from kefu.models import Chunk, SearchHit, StoredChunk, fingerprint

if TYPE_CHECKING:
    from botocore.credentials import Credentials

    from kefu.ports import SearchQuery, Vectors

_CHUNK_FIELDS = [field.name for field in fields(Chunk)]
_KEYWORD_FIELDS = (
    "id",
    "kind",
    "lang",
    "tenant",
    "category",
    "source",
    "fingerprint",
    "kb_version",
)
_TEXT_FIELDS = ("title", "section", "text", "keys")
_VERSION_DOC = "version"
# Stored vectors are rounded to this many decimals: half the bytes of a full float repr, and a
# cosine error below 1e-5, far under the three decimals the thresholds are calibrated to.
_DECIMALS = 6
_MGET_BATCH = 1_000
_PAGE = 1_000
# Throttled bulk items are retried this many times (with the helper's backoff) before failing.
_BULK_RETRIES = 3
_META_BODY: dict[str, Any] = {
    "mappings": {
        "properties": {
            "version": {"type": "long"},
            "reserved": {"type": "long"},
            # A tenant's FAQ head (kefu.head), base64 in a binary field: stored, never indexed.
            "tenant": {"type": "keyword"},
            "head": {"type": "binary"},
        }
    }
}
# Chunk fields added after the first release, put on an index created before them.
_LATER_FIELDS: dict[str, Any] = {"properties": {"kb_version": {"type": "keyword"}}}
# Question vectors make FAQ documents large: read them for head training this many at a time.
_QUESTIONS_PAGE = 200
# Meta-document scripts (painless). A reservation is one past both the published version and
# the last reservation; publishing always moves the version on, to the reservation if it is
# ahead (a delete publishes reservation 0). Not Math.max: painless knows only its double
# overload, which stored 1.0 and then failed the long casts (found against OpenSearch 2.5); the
# Number casts read such a stored double, and JSON integers, alike.
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
# The normalization processor's weights, one per sub-query of the candidates' `hybrid` query
# (questions, centroids, contents, BM25); they must sum to 1. Equal: the fused score only
# decides which chunks are scored exactly, and every view may bring the right one.
_FUSION_WEIGHTS = (0.25, 0.25, 0.25, 0.25)

# Seconds a request may wait (requests applies it to connecting and to each read), and retries
# after the first attempt. A chat search is `SEARCH_REQUESTS` requests after the question was
# embedded, all within API Gateway's 29 seconds; ingestion has minutes, and a retry is cheaper
# than a failed batch.
INTERACTIVE_TIMEOUT = 1.5
INTERACTIVE_RETRIES = 1
BATCH_TIMEOUT = 10.0
BATCH_RETRIES = 2
SEARCH_REQUESTS = 2  # the candidates' `hybrid` search, then the exact scoring


def document_id(tenant: str, chunk_id: str) -> str:
    """The id of a chunk's document: one per (tenant, chunk id), of a fixed 64 characters
    whatever the chunk id's length (OpenSearch caps ids at 512 bytes), and safe in a URL.

    The pair is hashed as a JSON array, so no tenant or chunk id can be spelled to collide with
    another pair.
    """
    pair = json.dumps([tenant, chunk_id], ensure_ascii=False)
    return hashlib.sha256(pair.encode()).hexdigest()


class OpenSearchIndex:
    """A `KnowledgeIndex` in one OpenSearch index (and a small meta index for the version).

    `client` is an `opensearchpy.OpenSearch` (see `connect`); `dim` is the embedder's dimension.
    The blend weights default to `EmbeddedIndex`'s. A search scores its `candidates` best fused
    chunks exactly (and asks each sub-query for as many). Bulk writes are split into requests of
    at most `max_bulk_bytes` and `max_bulk_docs`. With `refresh`, writes wait until they are
    searchable.
    """

    def __init__(
        self,
        client: OpenSearch,
        name: str,
        *,
        dim: int,
        centroid_weight: float = 1.0,
        content_weight: float = 0.5,
        lexical_weight: float = 0.0,
        candidates: int = 30,
        chinese_analyzer: str = "smartcn",
        shards: int = 1,
        max_bulk_bytes: int = 5 * 1024 * 1024,
        max_bulk_docs: int = 500,
        refresh: bool = True,
    ) -> None:
        self._client = client
        self.name = name
        self.meta_index = f"{name}-meta"
        self.search_pipeline = f"{name}-hybrid"
        self._dim = dim
        self._centroid_weight = centroid_weight
        self._content_weight = content_weight
        self._lexical_weight = lexical_weight
        self._candidates = candidates
        self._chinese_analyzer = chinese_analyzer
        self._shards = shards
        self._max_bulk_bytes = max_bulk_bytes
        self._max_bulk_docs = max_bulk_docs
        self._refresh: dict[str, Any] = {"refresh": "wait_for"} if refresh else {}
        self._ready = False

    # -- setup -------------------------------------------------------------------------------
    def _index_body(self) -> dict[str, Any]:
        """The settings and mapping the index is created with."""
        text = {
            "type": "text",
            "analyzer": "english",
            "fields": {"zh": {"type": "text", "analyzer": self._chinese_analyzer}},
        }
        vector = {
            "type": "knn_vector",
            "dimension": self._dim,
            "method": {
                "name": "hnsw",
                "engine": "faiss",
                "space_type": "innerproduct",
                "parameters": {"m": 16, "ef_construction": 128},
            },
        }
        keyword = {"type": "keyword"}
        return {
            "settings": {"index": {"knn": True, "number_of_shards": self._shards}},
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    **dict.fromkeys(_KEYWORD_FIELDS, keyword),
                    **dict.fromkeys(_TEXT_FIELDS, text),
                    "content_vector": vector,
                    "centroid_vector": vector,
                    "questions": {
                        "type": "nested",
                        "properties": {
                            "vector": vector,
                            "tenant": keyword,
                            "lang": keyword,
                            "category": keyword,
                        },
                    },
                },
            },
        }

    def ensure_index(self) -> None:
        """Create the index and the meta index if they do not exist, then the search pipeline
        (`ensure_pipeline`); safe to call concurrently."""
        with _unavailable("index setup"):
            for name, body in ((self.name, self._index_body()), (self.meta_index, _META_BODY)):
                if self._client.indices.exists(index=name):
                    # Map the fields added since an older index was created (the chunk mapping
                    # is strict); putting a field again as it is changes nothing.
                    added = _LATER_FIELDS if name == self.name else _META_BODY["mappings"]
                    self._put_mapping(name, added)
                    continue
                try:
                    self._client.indices.create(index=name, body=body)
                except RequestError as exc:
                    if exc.error != "resource_already_exists_exception":
                        raise ConfigurationError(f"cannot create index {name}: {exc}") from exc
        self.ensure_pipeline()
        self._ready = True

    def _put_mapping(self, index: str, mapping: dict[str, Any]) -> None:
        try:
            self._client.indices.put_mapping(index=index, body=mapping)
        except RequestError as exc:
            raise ConfigurationError(f"cannot add fields to index {index}: {exc}") from exc

    def _pipeline_body(self) -> dict[str, Any]:
        """The search pipeline fusing the candidates' `hybrid` sub-queries."""
        return {
            "description": f"Fuses the candidate sub-queries of knowledge index {self.name}",
            "phase_results_processors": [
                {
                    "normalization-processor": {
                        "normalization": {"technique": "min_max"},
                        "combination": {
                            "technique": "arithmetic_mean",
                            "parameters": {"weights": list(_FUSION_WEIGHTS)},
                        },
                    }
                }
            ],
        }

    def ensure_pipeline(self) -> None:
        """Create the search pipeline, or replace one that differs; safe to call concurrently.

        Read first: a PUT always publishes a new cluster state, even for the same pipeline,
        and every ingest invocation ensures the index.
        """
        body = self._pipeline_body()
        with _unavailable("search pipeline setup"):
            try:
                stored = self._client.search_pipeline.get(id=self.search_pipeline)
            except NotFoundError:
                stored = {}
            if stored.get(self.search_pipeline) == body:
                return
            try:
                self._client.search_pipeline.put(id=self.search_pipeline, body=body)
            except RequestError as exc:
                # e.g. a cluster without the neural-search plugin's normalization processor
                raise ConfigurationError(
                    f"cannot create search pipeline {self.search_pipeline}: {exc}"
                ) from exc

    # -- writes ------------------------------------------------------------------------------
    def upsert(self, chunks: Sequence[Chunk], key_vectors: Sequence[Vectors]) -> None:
        if len(chunks) != len(key_vectors):
            raise ValueError("one vector matrix per chunk")
        for chunk, vectors in zip(chunks, key_vectors, strict=True):
            if vectors.shape[0] != 1 + len(chunk.keys):
                raise ValueError(f"chunk {chunk.id}: one vector for content and per key")
        if not self._ready:
            self.ensure_index()
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
        self._publish_version(written_at)

    def delete(self, chunk_ids: Sequence[str], *, tenant: str) -> None:
        if not chunk_ids:
            return
        labels = {document_id(tenant, chunk_id): _label(tenant, chunk_id) for chunk_id in chunk_ids}
        results = self._bulk(
            (({"delete": {"_index": self.name, "_id": doc_id}}, None) for doc_id in labels),
            labels,
        )
        if any(result.get("result") == "deleted" for result in results):
            self._publish_version(0)

    def _document(
        self, chunk: Chunk, digest: str, vectors: Vectors, written_at: int
    ) -> dict[str, Any]:
        """The document a chunk is stored as (`vectors`: content row, then one per key), written
        at KB version `written_at`."""
        rows = np.asarray(vectors, dtype=np.float64)
        doc: dict[str, Any] = {
            **asdict(chunk),
            "keys": list(chunk.keys),
            "kb_version": str(written_at),
            "fingerprint": digest,
            "content_vector": _rounded(rows[0]),
        }
        if chunk.keys:
            scope = {"tenant": chunk.tenant, "lang": chunk.lang, "category": chunk.category}
            doc["questions"] = [{"vector": _rounded(row), **scope} for row in rows[1:]]
            centroid = rows[1:].sum(axis=0)
            norm = float(np.linalg.norm(centroid))
            doc["centroid_vector"] = _rounded(centroid / norm if norm else centroid)
        return doc

    def _index_action(
        self, chunk: Chunk, doc_id: str, digest: str, vectors: Vectors, written_at: int
    ) -> tuple[dict[str, Any], str]:
        """A bulk action and its document, serialised once here so its size can be checked."""
        serializer = self._client.transport.serializer
        action = {"index": {"_index": self.name, "_id": doc_id}}
        source: str = serializer.dumps(self._document(chunk, digest, vectors, written_at))
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
        with _unavailable("bulk write"):
            # Posted to `<index>/_bulk`, not the domain's `/_bulk`: access policies can then
            # allow the ingest role to write this index and no other.
            for ok, item in helpers.streaming_bulk(
                self._client,
                actions,
                index=self.name,
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
        with _unavailable("read"):
            for start in range(0, len(doc_ids), _MGET_BATCH):
                batch = list(doc_ids[start : start + _MGET_BATCH])
                response = self._client.mget(
                    index=self.name, body={"ids": batch}, _source_includes=["fingerprint"]
                )
                for doc in response["docs"]:
                    if doc.get("found"):
                        stored[doc["_id"]] = doc["_source"]["fingerprint"]
        return stored

    def _reserve_version(self) -> int:
        """The KB version the chunks of this write carry; readers see it once published."""
        with _unavailable("version update"):
            response = self._client.update(
                index=self.meta_index,
                id=_VERSION_DOC,
                body={
                    "script": {"source": _RESERVE_SCRIPT, "lang": "painless"},
                    "upsert": {"version": 0, "reserved": 1},
                },
                retry_on_conflict=5,
                _source=True,
            )
        return int(response["get"]["_source"]["reserved"])

    def _publish_version(self, reserved: int) -> None:
        """Move the KB version on, to `reserved` if that is ahead (0: by one)."""
        with _unavailable("version update"):
            self._client.update(
                index=self.meta_index,
                id=_VERSION_DOC,
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

    # -- reads -------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        with _unavailable("version read"):
            try:
                doc = self._client.get(index=self.meta_index, id=_VERSION_DOC)
            except NotFoundError:
                return "0"
        return str(doc["_source"]["version"])

    def count(self) -> int:
        with _unavailable("count"):
            try:
                return int(self._client.count(index=self.name)["count"])
            except NotFoundError:
                return 0

    def fingerprints(self, tenant: str, source: str | None = None) -> dict[str, str]:
        scope: list[dict[str, Any]] = [{"term": {"tenant": tenant}}]
        if source is not None:
            scope.append({"term": {"source": source}})
        return {
            doc["id"]: doc["fingerprint"]
            for doc in self._scan(scope, fields=["id", "fingerprint"], page=_PAGE)
        }

    def catalog(self, tenant: str) -> dict[str, StoredChunk]:
        return {
            doc["id"]: StoredChunk(doc["source"], doc["fingerprint"], doc["kind"], doc["lang"])
            for doc in self._scan(
                [{"term": {"tenant": tenant}}],
                fields=["id", "source", "fingerprint", "kind", "lang"],
                page=_PAGE,
            )
        }

    def faq_questions(self, tenant: str) -> dict[str, Vectors]:
        scope = [{"term": {"tenant": tenant}}, {"term": {"kind": "faq"}}]
        found: dict[str, Vectors] = {}
        for doc in self._scan(scope, fields=["id", "questions.vector"], page=_QUESTIONS_PAGE):
            rows = [question["vector"] for question in doc.get("questions", [])]
            if rows:
                found[doc["id"]] = np.asarray(rows, dtype=np.float32)
        return found

    def _scan(
        self,
        scope: list[dict[str, Any]],
        *,
        fields: list[str],
        page: int,
        index: str | None = None,
        order: dict[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The `fields` of every document of `index` (the chunks' by default) matching the
        filters, paged with `search_after` in `order` (by chunk id by default: a unique
        keyword); nothing when the index does not exist."""
        body: dict[str, Any] = {
            "size": page,
            "_source": fields,
            "query": {"bool": {"filter": scope}},
            "sort": [order or {"id": "asc"}],
        }
        with _unavailable("read"):
            while True:
                try:
                    hits = self._client.search(index=index or self.name, body=body)["hits"]["hits"]
                except NotFoundError:
                    return
                yield from (hit["_source"] for hit in hits)
                if len(hits) < page:
                    return
                body["search_after"] = hits[-1]["sort"]

    def save_head(self, tenant: str, head: bytes | None, *, trained_at: int = 0) -> bool:
        """Written through the meta index's `_bulk` (and read through its `_mget`): the access
        policies then name fixed paths, not one document path per tenant. `trained_at` is the
        document's external version (`external_gte`): a head trained on an older KB is
        refused by the cluster with a version conflict, atomically."""
        if not self._ready:
            self.ensure_index()
        doc_id = _head_id(tenant)
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
        with _unavailable("head write"):
            response = self._client.bulk(body=body, index=self.meta_index, **self._refresh)
        [(op_type, result)] = response["items"][0].items()
        status = int(result.get("status", 500))
        if status == 409 or (op_type == "delete" and status == 404):
            return False  # a newer KB's head is stored, or there was none to remove
        if status >= 300:
            message = f"the FAQ head of tenant {tenant} was not written: {status} {result}"
            if status == 429 or status >= 500:
                raise DependencyUnavailable(message)
            raise IndexWriteRejected(message)
        self._publish_version(0)
        return True

    def load_head(self, tenant: str) -> bytes | None:
        with _unavailable("head read"):
            try:
                response = self._client.mget(
                    index=self.meta_index, body={"ids": [_head_id(tenant)]}
                )
            except NotFoundError:
                return None
        [doc] = response["docs"]
        return base64.b64decode(doc["_source"]["head"]) if doc.get("found") else None

    def head_tenants(self) -> list[str]:
        """A `_search` of the meta index for its head documents (the version document has no
        tenant; there is one head document per tenant), their tenant field only. A meta index
        created before heads has no `tenant` mapping until `ensure_index` puts it: the sort
        then takes the field as an empty keyword instead of failing."""
        docs = self._scan(
            [{"exists": {"field": "tenant"}}],
            fields=["tenant"],
            page=_PAGE,
            index=self.meta_index,
            order={"tenant": {"order": "asc", "unmapped_type": "keyword"}},
        )
        return [doc["tenant"] for doc in docs]

    def search(self, query: SearchQuery) -> list[SearchHit]:
        vector = _rounded(query.vector)
        text_fields = _text_fields(query)
        with _unavailable("search"):
            candidates = self._fused_candidates(query, vector, text_fields)
            if not candidates:
                return []
            scored = self._client.search(
                index=self.name,
                body=self._exact_scoring(candidates, query, vector, text_fields),
                include_named_queries_score=True,
            )["hits"]["hits"]
        best = max((_named_scores(hit).get("lexical", 0.0) for hit in scored), default=0.0)
        hits = [self._hit(hit, best_bm25=best) for hit in scored]
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits[: query.limit]

    def _fused_candidates(
        self, query: SearchQuery, vector: list[float], text_fields: list[str]
    ) -> list[str]:
        """The document ids of the candidates' `hybrid` search, best fused first.

        The index or the pipeline missing means nothing was ingested yet: the search pipeline
        is the ingest side's to create, never a search's.
        """
        try:
            response = self._client.search(
                index=self.name,
                body=self._candidate_search(query, vector, text_fields),
                search_pipeline=self.search_pipeline,
            )
        except NotFoundError as exc:
            if exc.error != "index_not_found_exception":
                raise
            raise IndexNotReady(
                "the knowledge index does not exist yet: ingest a knowledge base"
            ) from exc
        except RequestError as exc:
            if f"Pipeline {self.search_pipeline} is not defined" not in str(exc.info):
                raise
            raise IndexNotReady(
                f"the search pipeline {self.search_pipeline} does not exist yet: "
                "ingest a knowledge base"
            ) from exc
        # Every sub-query is filtered to the query's tenant: scoring these ids stays in it.
        return list(dict.fromkeys(hit["_id"] for hit in response["hits"]["hits"]))

    def _candidate_search(
        self, query: SearchQuery, vector: list[float], text_fields: list[str]
    ) -> dict[str, Any]:
        """The `hybrid` search gathering candidates: closest questions, centroids, contents,
        and the best BM25 matches, each filtered to the query's tenant, language and category,
        fused by the search pipeline."""
        k = max(self._candidates, query.limit)
        scope = _scope(query, prefix="")
        nested_scope = _scope(query, prefix="questions.")

        def knn(field: str, filters: list[dict[str, Any]]) -> dict[str, Any]:
            return {field: {"vector": vector, "k": k, "filter": {"bool": {"filter": filters}}}}

        sub_queries = [
            {
                "nested": {
                    "path": "questions",
                    "score_mode": "max",
                    "query": {"knn": knn("questions.vector", nested_scope)},
                }
            },
            {"knn": knn("centroid_vector", scope)},
            {"knn": knn("content_vector", scope)},
            {"bool": {"filter": scope, "must": [_bm25(query, text_fields)]}},
        ]
        return {"size": k, "_source": False, "query": {"hybrid": {"queries": sub_queries}}}

    def _exact_scoring(
        self,
        doc_ids: Sequence[str],
        query: SearchQuery,
        vector: list[float],
        text_fields: list[str],
    ) -> dict[str, Any]:
        """The search scoring the documents `doc_ids` exactly: one named query per view, and
        the BM25 query named `lexical`."""

        def similarity(field: str, among: dict[str, Any]) -> dict[str, Any]:
            script = {
                "source": "knn_score",
                "lang": "knn",
                "params": {"field": field, "query_value": vector, "space_type": "innerproduct"},
            }
            return {"script_score": {"query": among, "script": script}}

        nearest = {
            "nested": {
                "path": "questions",
                "score_mode": "max",
                "query": similarity("questions.vector", {"match_all": {}}),
                "_name": "nearest",
            }
        }
        centroid = similarity("centroid_vector", {"exists": {"field": "centroid_vector"}})
        content = similarity("content_vector", {"match_all": {}})
        centroid["script_score"]["_name"] = "centroid"
        content["script_score"]["_name"] = "content"
        lexical = _bm25(query, text_fields)
        lexical["multi_match"]["_name"] = "lexical"
        return {
            "size": len(doc_ids),
            "_source": _CHUNK_FIELDS,
            "track_total_hits": False,
            "query": {
                "bool": {
                    "filter": [{"ids": {"values": list(doc_ids)}}],
                    "should": [nearest, centroid, content, lexical],
                }
            },
        }

    def _hit(self, hit: dict[str, Any], *, best_bm25: float) -> SearchHit:
        source = hit["_source"]
        chunk = Chunk(**{**source, "keys": tuple(source["keys"])})
        scores = _named_scores(hit)
        bm25 = scores.pop("lexical", 0.0)
        lexical = bm25 / best_bm25 if best_bm25 > 0 else 0.0
        views = {name: _cosine(score) for name, score in scores.items()}
        content = views.get("content", 0.0)
        nearest = views.get("nearest", content)
        if chunk.kind == "faq":
            wc, wa = self._centroid_weight, self._content_weight
            dense = (nearest + wc * views.get("centroid", 0.0) + wa * content) / (1.0 + wc + wa)
        else:
            dense = nearest
        return SearchHit(
            chunk=chunk,
            score=dense + self._lexical_weight * lexical,
            dense=dense,
            lexical=lexical,
            nearest=nearest,
        )


def connect(
    url: str,
    *,
    region: str,
    service: Literal["es", "aoss"] = "es",
    credentials: Credentials | None = None,
    timeout: float = INTERACTIVE_TIMEOUT,
    max_retries: int = INTERACTIVE_RETRIES,
) -> OpenSearch:
    """A client for a managed domain (`es`) or a serverless collection (`aoss`), signing each
    request with SigV4 and verifying TLS. Credentials default to boto3's chain (the Lambda's
    role); nothing is sent until the first request.

    A request waits up to `timeout` seconds to connect and as long for each read, and is tried
    `1 + max_retries` times (after a timeout, a lost connection or a 502-504). The defaults are
    a chat turn's; ingestion passes `BATCH_TIMEOUT` and `BATCH_RETRIES`.
    """
    if not url.startswith("https://"):
        raise ConfigurationError(f"OpenSearch URL {url!r} must use https: requests are signed")
    if credentials is None:
        import boto3

        credentials = boto3.Session().get_credentials()
        if credentials is None:
            raise ConfigurationError("no AWS credentials to sign OpenSearch requests with")
    return OpenSearch(
        hosts=[url],
        http_auth=AWSV4SignerAuth(credentials, region, service),
        use_ssl=True,
        verify_certs=True,
        connection_class=RequestsHttpConnection,
        timeout=timeout,
        max_retries=max_retries,
        retry_on_timeout=True,
    )


@contextmanager
def _unavailable(action: str) -> Iterator[None]:
    """Turn a transport or cluster error into DependencyUnavailable, so the chat degrades."""
    try:
        yield
    except TransportError as exc:
        raise DependencyUnavailable(f"OpenSearch {action} failed: {exc}") from exc


def _head_id(tenant: str) -> str:
    """The meta document holding a tenant's FAQ head."""
    return f"head-{hashlib.sha256(tenant.encode()).hexdigest()}"


def _label(tenant: str, chunk_id: str) -> str:
    """A chunk as an error message names it: its document id is a hash."""
    return f"{chunk_id} (tenant {tenant})"


def _text_fields(query: SearchQuery) -> list[str]:
    """The fields BM25 matches: the query language's analysis, or both when it is unknown."""
    if query.language == "zh":
        return [f"{name}.zh" for name in _TEXT_FIELDS]
    if query.language == "en":
        return list(_TEXT_FIELDS)
    return [*_TEXT_FIELDS, *(f"{name}.zh" for name in _TEXT_FIELDS)]


def _bm25(query: SearchQuery, text_fields: list[str]) -> dict[str, Any]:
    return {"multi_match": {"query": query.text, "fields": text_fields, "type": "best_fields"}}


def _named_scores(hit: dict[str, Any]) -> dict[str, float]:
    """Each named query's score for a hit (`include_named_queries_score`)."""
    return {name: float(score) for name, score in (hit.get("matched_queries") or {}).items()}


def _scope(query: SearchQuery, *, prefix: str) -> list[dict[str, Any]]:
    scope: list[dict[str, Any]] = [{"term": {f"{prefix}tenant": query.tenant}}]
    if query.language is not None:
        scope.append({"term": {f"{prefix}lang": query.language}})
    if query.category is not None:
        scope.append({"term": {f"{prefix}category": query.category}})
    return scope


def _cosine(score: float) -> float:
    """Undo the k-NN plugin's inner-product score: 1 + ip when ip ≥ 0, 1 / (1 - ip) below."""
    return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score


def _rounded(vector: np.ndarray) -> list[float]:
    rounded: list[float] = np.round(np.asarray(vector, dtype=np.float64), _DECIMALS).tolist()
    return rounded


def _already_expanded(
    action: tuple[dict[str, Any], str | None],
) -> tuple[dict[str, Any], str | None]:
    return action
