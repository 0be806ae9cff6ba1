"""A recording stand-in for `opensearchpy.OpenSearch`: no server, no network.

It keeps the documents written through `bulk`, answers `mget`, `get`, `update` and `count`
from them, keeps search pipelines, records every call, and answers `search` with canned
responses queued by the test (searching is the server's job; the tests check what is asked and
how the answer is read). `update` runs the index's meta-document scripts, known by their text,
in Python: a script it does not know fails the test. `count` of an index that was never
created is a 404, as on a cluster.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from opensearchpy.exceptions import NotFoundError, RequestError
from opensearchpy.serializer import JSONSerializer


@dataclass
class Call:
    method: str
    kwargs: dict[str, Any]


# The meta-document scripts of `OpenSearchIndex`, as painless would run them.
_SCRIPTS: dict[str, Any] = {
    (
        "long version = ((Number) ctx._source.version).longValue(); "
        "long reserved = ctx._source.reserved == null ? 0L "
        ": ((Number) ctx._source.reserved).longValue(); "
        "ctx._source.reserved = (version > reserved ? version : reserved) + 1"
    ): lambda doc, params: {**doc, "reserved": max(doc["version"], doc.get("reserved", 0)) + 1},
    (
        "long next = ((Number) ctx._source.version).longValue() + 1; "
        "long reserved = ((Number) params.reserved).longValue(); "
        "ctx._source.version = next > reserved ? next : reserved"
    ): lambda doc, params: {**doc, "version": max(doc["version"] + 1, params["reserved"])},
}


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
        # A copy, as a server keeps its own: the body may be the adapter's module constant.
        self._client.indices_created[index] = json.loads(json.dumps(body))
        return {"acknowledged": True, "index": index}

    def put_mapping(self, *, index: str, body: dict[str, Any]) -> dict[str, Any]:
        self._client.calls.append(Call("indices.put_mapping", {"index": index, "body": body}))
        mapping = self._client.indices_created[index]["mappings"]["properties"]
        mapping.update(body["properties"])
        return {"acknowledged": True}


class _SearchPipelines:
    def __init__(self, client: RecordingClient) -> None:
        self._client = client

    def get(self, *, id: str) -> dict[str, Any]:
        self._client.calls.append(Call("search_pipeline.get", {"id": id}))
        if id not in self._client.pipelines:
            raise NotFoundError(404, "resource_not_found_exception", {})
        return {id: json.loads(json.dumps(self._client.pipelines[id]))}

    def put(self, *, id: str, body: dict[str, Any]) -> dict[str, Any]:
        self._client.calls.append(Call("search_pipeline.put", {"id": id, "body": body}))
        self._client.pipelines[id] = json.loads(json.dumps(body))
        return {"acknowledged": True}


class RecordingClient:
    def __init__(self) -> None:
        self.transport = _Transport()
        self.indices = _Indices(self)
        self.search_pipeline = _SearchPipelines(self)
        self.indices_created: dict[str, dict[str, Any]] = {}
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.docs: dict[str, dict[str, Any]] = {}
        # The meta index's version document, once written.
        self.meta: dict[str, int] | None = None
        # The meta index's other documents (FAQ heads), by id, and their external versions.
        self.meta_docs: dict[str, dict[str, Any]] = {}
        self.external_versions: dict[str, int] = {}
        # id -> (status, error) for items the bulk API should refuse.
        self.refuse: dict[str, tuple[int, dict[str, Any]]] = {}
        self.search_responses: deque[Any] = deque()

    def of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    # -- documents ---------------------------------------------------------------------------
    def bulk(self, *, body: str | list[dict[str, Any]], **params: Any) -> dict[str, Any]:
        if not isinstance(body, str):  # the client serialises a list of actions and documents
            body = "".join(f"{json.dumps(line)}\n" for line in body)
        self.calls.append(Call("bulk", {"body": body, **params}))
        # Documents of the meta index (FAQ heads) are kept apart from the chunks.
        docs = self.meta_docs if str(params.get("index", "")).endswith("-meta") else self.docs
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
            if meta.get("version_type") == "external_gte":
                if meta["version"] < self.external_versions.get(doc_id, 0):
                    conflict = {"type": "version_conflict_engine_exception"}
                    items.append({op_type: {"_id": doc_id, "status": 409, "error": conflict}})
                    position += op_type == "index"
                    continue
                self.external_versions[doc_id] = meta["version"]
            if op_type == "index":
                docs[doc_id] = json.loads(lines[position])
                position += 1
                items.append({op_type: {"_id": doc_id, "status": 201, "result": "created"}})
            elif docs.pop(doc_id, None) is None:
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
        if index.endswith("-meta"):
            return {
                "docs": [
                    {"_index": index, "_id": i, "found": True, "_source": self.meta_docs[i]}
                    if i in self.meta_docs
                    else {"_index": index, "_id": i, "found": False}
                    for i in body["ids"]
                ]
            }
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
        script = body["script"]
        if script["source"] not in _SCRIPTS:
            raise RequestError(400, "script_exception", {"script": script["source"]})
        created = self.meta is None
        if self.meta is None:
            self.meta = dict(body["upsert"])
        else:
            self.meta = _SCRIPTS[script["source"]](self.meta, script.get("params", {}))
        response: dict[str, Any] = {"_id": id, "result": "created" if created else "updated"}
        if params.get("_source"):
            response["get"] = {"found": True, "_source": dict(self.meta)}
        return response

    def get(self, *, index: str, id: str, **params: Any) -> dict[str, Any]:
        self.calls.append(Call("get", {"index": index, "id": id, **params}))
        if self.meta is None or id != "version":
            raise NotFoundError(404, "not_found", {"found": False})
        return {"_index": index, "_id": id, "found": True, "_source": dict(self.meta)}

    def count(self, *, index: str, **params: Any) -> dict[str, Any]:
        self.calls.append(Call("count", {"index": index, **params}))
        if index not in self.indices_created:
            raise NotFoundError(404, "index_not_found_exception", {"index": index})
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
