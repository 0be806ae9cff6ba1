"""Reads of what the knowledge index stores: its KB version, the tenants' chunks by pages,
and their FAQ heads. Each read of a missing index finds nothing rather than failing."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from opensearchpy.exceptions import NotFoundError

from kefu.adapters.opensearch.client import unavailable
from kefu.adapters.opensearch.mapping import VERSION_DOC, head_id
from kefu.models import StoredChunk

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from kefu.ports import Vectors

_PAGE = 1_000
# Question vectors make FAQ documents large: read them for head training this many at a time.
_QUESTIONS_PAGE = 200


class IndexReads:
    """Reads the chunk index `index` and its meta index `meta_index`."""

    def __init__(self, client: OpenSearch, *, index: str, meta_index: str) -> None:
        self._client = client
        self._index = index
        self._meta_index = meta_index

    def version(self) -> str:
        with unavailable("version read"):
            try:
                doc = self._client.get(index=self._meta_index, id=VERSION_DOC)
            except NotFoundError:
                return "0"
        return str(doc["_source"]["version"])

    def count(self) -> int:
        with unavailable("count"):
            try:
                return int(self._client.count(index=self._index)["count"])
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

    def load_head(self, tenant: str) -> bytes | None:
        with unavailable("head read"):
            try:
                response = self._client.mget(
                    index=self._meta_index, body={"ids": [head_id(tenant)]}
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
            index=self._meta_index,
            order={"tenant": {"order": "asc", "unmapped_type": "keyword"}},
        )
        return [doc["tenant"] for doc in docs]

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
        index = index or self._index
        with unavailable("read"):
            while True:
                try:
                    hits = self._client.search(index=index, body=body)["hits"]["hits"]
                except NotFoundError:
                    return
                yield from (hit["_source"] for hit in hits)
                if len(hits) < page:
                    return
                body["search_after"] = hits[-1]["sort"]
