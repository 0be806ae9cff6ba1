"""`OpenSearchIndex`: the `KnowledgeIndex` port on OpenSearch, made of the package's parts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kefu.adapters.opensearch.mapping import IndexSetup
from kefu.adapters.opensearch.reads import IndexReads
from kefu.adapters.opensearch.search import IndexSearch
from kefu.adapters.opensearch.writes import IndexWriter
from kefu.scoring import Blend

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from kefu.models import Chunk, SearchHit, StoredChunk
    from kefu.ports import SearchQuery, Vectors


class OpenSearchIndex:
    """A `KnowledgeIndex` in one OpenSearch index (and a small meta index for the version).

    `client` is an `opensearchpy.OpenSearch` (see `connect`) for a managed domain: a
    Serverless vector collection accepts neither custom document ids nor `refresh`. `dim` is
    the embedder's dimension; `blend` scores the hits as the embedded index does. A search
    scores its `candidates` best fused chunks exactly (and asks each sub-query for as many).
    Bulk writes are split into requests of at most `max_bulk_bytes` and `max_bulk_docs`. With
    `refresh`, writes wait until they are searchable.

    Every request names documents by their tenant's document ids or filters by tenant.
    """

    def __init__(
        self,
        client: OpenSearch,
        name: str,
        *,
        dim: int,
        blend: Blend = Blend(),  # noqa: B008 (frozen)
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
        refresh_params: dict[str, Any] = {"refresh": "wait_for"} if refresh else {}
        self._setup = IndexSetup(
            client,
            index=name,
            meta_index=self.meta_index,
            search_pipeline=self.search_pipeline,
            dim=dim,
            chinese_analyzer=chinese_analyzer,
            shards=shards,
        )
        self._writer = IndexWriter(
            client,
            self._setup,
            index=name,
            meta_index=self.meta_index,
            max_bulk_bytes=max_bulk_bytes,
            max_bulk_docs=max_bulk_docs,
            refresh=refresh_params,
        )
        self._reader = IndexReads(client, index=name, meta_index=self.meta_index)
        self._search = IndexSearch(
            client,
            index=name,
            search_pipeline=self.search_pipeline,
            candidates=candidates,
            blend=blend,
        )

    # -- setup (the ingest side's) -------------------------------------------------------------
    def ensure_index(self) -> None:
        self._setup.ensure_index()

    def ensure_pipeline(self) -> None:
        self._setup.ensure_pipeline()

    # -- writes --------------------------------------------------------------------------------
    def upsert(self, chunks: Sequence[Chunk], key_vectors: Sequence[Vectors]) -> None:
        self._writer.upsert(chunks, key_vectors)

    def delete(self, chunk_ids: Sequence[str], *, tenant: str) -> None:
        self._writer.delete(chunk_ids, tenant=tenant)

    def save_head(self, tenant: str, head: bytes | None, *, trained_at: int = 0) -> bool:
        return self._writer.save_head(tenant, head, trained_at=trained_at)

    # -- reads ---------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self._reader.version()

    def count(self) -> int:
        return self._reader.count()

    def fingerprints(self, tenant: str, source: str | None = None) -> dict[str, str]:
        return self._reader.fingerprints(tenant, source)

    def catalog(self, tenant: str) -> dict[str, StoredChunk]:
        return self._reader.catalog(tenant)

    def faq_questions(self, tenant: str) -> dict[str, Vectors]:
        return self._reader.faq_questions(tenant)

    def load_head(self, tenant: str) -> bytes | None:
        return self._reader.load_head(tenant)

    def head_tenants(self) -> list[str]:
        return self._reader.head_tenants()

    def search(self, query: SearchQuery) -> list[SearchHit]:
        return self._search.search(query)
