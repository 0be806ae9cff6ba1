"""The knowledge index's layout: document ids, the chunk and meta mappings, the search
pipeline, and `IndexSetup`, which creates or corrects them (the ingest side's job)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import numpy as np
from opensearchpy.exceptions import NotFoundError, RequestError

from kefu.adapters.opensearch.client import unavailable
from kefu.errors import ConfigurationError
from kefu.models import Chunk

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

CHUNK_FIELDS = [field.name for field in fields(Chunk)]
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
TEXT_FIELDS = ("title", "section", "text", "keys")
# The meta index's document holding the KB version.
VERSION_DOC = "version"
# Stored vectors are rounded to this many decimals: half the bytes of a full float repr, and a
# cosine error below 1e-5, far under the three decimals the thresholds are calibrated to.
_DECIMALS = 6
META_BODY: dict[str, Any] = {
    "mappings": {
        "properties": {
            # The KB version counter (see `writes`).
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
# The normalization processor's weights, one per sub-query of the candidates' `hybrid` query
# (questions, centroids, contents, BM25); they must sum to 1. Equal: the fused score only
# decides which chunks are scored exactly, and every view may bring the right one.
_FUSION_WEIGHTS = (0.25, 0.25, 0.25, 0.25)


def document_id(tenant: str, chunk_id: str) -> str:
    """The id of a chunk's document: one per (tenant, chunk id), so the same FAQ file ingested
    for two tenants is two sets of documents; of a fixed 64 characters whatever the chunk id's
    length (OpenSearch caps ids at 512 bytes), and safe in a URL. The chunk's own id stays a
    keyword field, which results and fingerprints are keyed by.

    The pair is hashed as a JSON array, so no tenant or chunk id can be spelled to collide with
    another pair.
    """
    pair = json.dumps([tenant, chunk_id], ensure_ascii=False)
    return hashlib.sha256(pair.encode()).hexdigest()


def head_id(tenant: str) -> str:
    """The meta document holding a tenant's FAQ head."""
    return f"head-{hashlib.sha256(tenant.encode()).hexdigest()}"


def rounded(vector: np.ndarray) -> list[float]:
    """A vector as it is stored or searched with."""
    values: list[float] = np.round(np.asarray(vector, dtype=np.float64), _DECIMALS).tolist()
    return values


def index_body(*, dim: int, chinese_analyzer: str, shards: int) -> dict[str, Any]:
    """The settings and mapping the chunk index is created with: one document per chunk."""
    text = {
        "type": "text",
        "analyzer": "english",
        "fields": {"zh": {"type": "text", "analyzer": chinese_analyzer}},
    }
    # Vectors are unit length: their inner product is the cosine the embedded index uses.
    vector = {
        "type": "knn_vector",
        "dimension": dim,
        "method": {
            "name": "hnsw",
            "engine": "faiss",
            "space_type": "innerproduct",
            "parameters": {"m": 16, "ef_construction": 128},
        },
    }
    keyword = {"type": "keyword"}
    return {
        "settings": {"index": {"knn": True, "number_of_shards": shards}},
        "mappings": {
            "dynamic": "strict",
            "properties": {
                **dict.fromkeys(_KEYWORD_FIELDS, keyword),
                **dict.fromkeys(TEXT_FIELDS, text),
                # The embedded index's views of a chunk: its heading and text, the centroid of
                # its questions, and each question (an FAQ entry's questions, an out-of-scope
                # entry's examples), nested with a copy of the scope so that a k-NN filter
                # inside the nested query restricts the questions searched.
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


def pipeline_body(index: str) -> dict[str, Any]:
    """The search pipeline fusing the candidates' `hybrid` sub-queries: each one's scores
    min-max normalised, then averaged."""
    return {
        "description": f"Fuses the candidate sub-queries of knowledge index {index}",
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


class IndexSetup:
    """Creates the chunk index, its meta index and its search pipeline. Only the ingest side,
    whose role may write them, sets them up: a search never does."""

    def __init__(
        self,
        client: OpenSearch,
        *,
        index: str,
        meta_index: str,
        search_pipeline: str,
        dim: int,
        chinese_analyzer: str,
        shards: int,
    ) -> None:
        self._client = client
        self._index = index
        self._meta_index = meta_index
        self._search_pipeline = search_pipeline
        self._body = index_body(dim=dim, chinese_analyzer=chinese_analyzer, shards=shards)
        self._ready = False

    def ensure_ready(self) -> None:
        """Set the indexes up once, before this process's first write."""
        if not self._ready:
            self.ensure_index()

    def ensure_index(self) -> None:
        """Create the index and the meta index if they do not exist, then the search pipeline
        (`ensure_pipeline`); safe to call concurrently.

        An existing index gets the fields added since it was created, and is not otherwise
        migrated: one with another mapping, or written when the document id was the chunk id
        alone, needs a new index to ingest into.
        """
        with unavailable("index setup"):
            for name, body in ((self._index, self._body), (self._meta_index, META_BODY)):
                if self._client.indices.exists(index=name):
                    # Map the fields added since an older index was created (the chunk mapping
                    # is strict); putting a field again as it is changes nothing.
                    added = _LATER_FIELDS if name == self._index else META_BODY["mappings"]
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

    def ensure_pipeline(self) -> None:
        """Create the search pipeline, or replace one that differs; safe to call concurrently.

        Read first: a PUT always publishes a new cluster state, even for the same pipeline,
        and every ingest invocation ensures the index.
        """
        body = pipeline_body(self._index)
        with unavailable("search pipeline setup"):
            try:
                stored = self._client.search_pipeline.get(id=self._search_pipeline)
            except NotFoundError:
                stored = {}
            if stored.get(self._search_pipeline) == body:
                return
            try:
                self._client.search_pipeline.put(id=self._search_pipeline, body=body)
            except RequestError as exc:
                # e.g. a cluster without the neural-search plugin's normalization processor
                raise ConfigurationError(
                    f"cannot create search pipeline {self._search_pipeline}: {exc}"
                ) from exc
