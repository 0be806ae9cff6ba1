"""A recording stand-in for `opensearchpy.OpenSearch`: no server, no network.

It keeps the documents written through `bulk`, answers `mget`, `get`, `update` and `count`
from them, records every call, and answers `search` and `msearch` with canned responses queued
by the test (searching is the server's job; the tests check what is asked and how the answer
is read).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from opensearchpy.exceptions import NotFoundError
from opensearchpy.serializer import JSONSerializer


@dataclass
class Call:
    method: str
    kwargs: dict[str, Any]


@dataclass
class _Transport:
    serializer: JSONSerializer = field(default_factory=JSONSerializer)


class _Indices:
    def __init__(self, client: RecordingClient) -> None:
        self._client = client

    def exists(self, *, index: str) -> bool:
        self._client.calls.append(Call("indices.exists", {"index": index}))
        return index in self._client.indices_created

    def create(self, *, index: str, body: dict[str, Any]) -> dict[str, Any]:
        self._client.calls.append(Call("indices.create", {"index": index, "body": body}))
        self._client.indices_created[index] = body
        return {"acknowledged": True, "index": index}


class RecordingClient:
    def __init__(self) -> None:
        self.transport = _Transport()
        self.indices = _Indices(self)
        self.indices_created: dict[str, dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.docs: dict[str, dict[str, Any]] = {}
        self.version: int | None = None
        # id -> (status, error) for items the bulk API should refuse.
        self.refuse: dict[str, tuple[int, dict[str, Any]]] = {}
        self.search_responses: deque[Any] = deque()
        self.msearch_responses: deque[Any] = deque()

    def of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    # -- documents ---------------------------------------------------------------------------
    def bulk(self, *, body: str, **params: Any) -> dict[str, Any]:
        self.calls.append(Call("bulk", {"body": body, **params}))
        lines = body.rstrip("\n").split("\n")
        items, position = [], 0
        while position < len(lines):
            [(op_type, meta)] = json.loads(lines[position]).items()
            position += 1
            doc_id = meta["_id"]
            if doc_id in self.refuse:
                status, error = self.refuse[doc_id]
                items.append({op_type: {"_id": doc_id, "status": status, "error": error}})
                position += op_type == "index"
                continue
            if op_type == "index":
                self.docs[doc_id] = json.loads(lines[position])
                position += 1
                items.append({op_type: {"_id": doc_id, "status": 201, "result": "created"}})
            elif self.docs.pop(doc_id, None) is None:
                items.append({op_type: {"_id": doc_id, "status": 404, "result": "not_found"}})
            else:
                items.append({op_type: {"_id": doc_id, "status": 200, "result": "deleted"}})
        return {
            "took": 3,
            "errors": any("error" in next(iter(i.values())) for i in items),
            "items": items,
        }

    def mget(self, *, index: str, body: dict[str, Any], **params: Any) -> dict[str, Any]:
        self.calls.append(Call("mget", {"index": index, "body": body, **params}))
        return {
            "docs": [
                {
                    "_index": index,
                    "_id": i,
                    "found": True,
                    "_source": {"fingerprint": self.docs[i]["fingerprint"]},
                }
                if i in self.docs
                else {"_index": index, "_id": i, "found": False}
                for i in body["ids"]
            ]
        }

    def update(self, *, index: str, id: str, body: dict[str, Any], **params: Any) -> dict[str, Any]:
        self.calls.append(Call("update", {"index": index, "id": id, "body": body, **params}))
        self.version = (self.version or 0) + 1
        return {"_id": id, "result": "updated"}

    def get(self, *, index: str, id: str, **params: Any) -> dict[str, Any]:
        self.calls.append(Call("get", {"index": index, "id": id, **params}))
        if self.version is None:
            raise NotFoundError(404, "not_found", {"found": False})
        return {"_index": index, "_id": id, "found": True, "_source": {"version": self.version}}

    def count(self, *, index: str, **params: Any) -> dict[str, Any]:
        self.calls.append(Call("count", {"index": index, **params}))
        return {"count": len(self.docs)}

    # -- searches ----------------------------------------------------------------------------
    def search(self, *, index: str, body: dict[str, Any], **params: Any) -> Any:
        self.calls.append(
            Call("search", {"index": index, "body": json.loads(json.dumps(body)), **params})
        )
        response = self.search_responses.popleft()
        if isinstance(response, Exception):
            raise response
        return response

    def msearch(self, *, index: str, body: list[dict[str, Any]], **params: Any) -> Any:
        self.calls.append(Call("msearch", {"index": index, "body": body, **params}))
        response = self.msearch_responses.popleft()
        if isinstance(response, Exception):
            raise response
        return response
