"""The embedded knowledge index: SQLite FTS5 for BM25, NumPy for vectors, one file on disk.

Every chunk has a content row (its heading and text) and, for an FAQ entry, one row per
question; each row holds a vector and lexical tokens. A search scores every row of the tenant
and language by cosine similarity (in memory the rows are ordered by tenant and language, so
that is one contiguous slice, half the index for a bilingual KB), and asks FTS5 for the best
BM25 rows; `kefu.scoring` blends the views into each chunk's scores, as for every index.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kefu.models import Chunk, SearchHit, StoredChunk, fingerprint
from kefu.scoring import Blend, relative_lexical
from kefu.text import tokenize

if TYPE_CHECKING:
    from kefu.ports import SearchQuery, Vectors

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    key TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    source TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_source ON chunks (tenant, source);
CREATE TABLE IF NOT EXISTS keys (
    rowid INTEGER PRIMARY KEY,
    chunk_key TEXT NOT NULL,
    is_question INTEGER NOT NULL,
    lang TEXT NOT NULL,
    tenant TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_by_chunk ON keys (chunk_key);
CREATE VIRTUAL TABLE IF NOT EXISTS keys_fts USING fts5 (tokens, scope);
CREATE VIRTUAL TABLE IF NOT EXISTS keys_vocab USING fts5vocab (keys_fts, 'row');
CREATE TABLE IF NOT EXISTS heads (
    tenant TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    trained_at INTEGER NOT NULL
);
"""
# The layout of the file; an index written with another is dropped and rebuilt on the next ingest.
_SCHEMA_VERSION = "5"
_TABLES = ("heads", "keys_vocab", "keys_fts", "keys", "chunks", "meta")

# How many BM25 keys to fetch; chunks outside them get no lexical credit.
_LEXICAL_CANDIDATES = 50
# A query term in more keys than this share (and at least _COMMON_MIN) is left out of the BM25
# query, as Lucene's common-terms query does: it says little and would make FTS5 score most rows.
_COMMON_SHARE = 0.01
_COMMON_MIN = 500


class EmbeddedIndex:
    """A `KnowledgeIndex` persisted to one SQLite file (or `:memory:`)."""

    def __init__(
        self,
        path: Path | str,
        *,
        blend: Blend = Blend(),  # noqa: B008 (frozen)
    ) -> None:
        if isinstance(path, Path):
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._migrate()
        self._lock = threading.RLock()
        self._blend = blend
        self._loaded = False
        self._chunks: list[Chunk] = []
        self._content: Vectors = np.zeros((0, 0), dtype=np.float32)
        self._questions: Vectors = np.zeros((0, 0), dtype=np.float32)
        self._question_first: np.ndarray = np.zeros(1, dtype=np.int64)
        self._centroid_scale: np.ndarray = np.zeros(0, dtype=np.float32)
        self._chunk_is_faq: np.ndarray = np.zeros(0, dtype=bool)
        self._chunk_of_rowid: dict[int, int] = {}
        self._ranges: dict[tuple[str, str | None], tuple[int, int]] = {}
        self._categories: dict[str | None, np.ndarray] = {}
        self._tenants: set[str] = set()

    def _migrate(self) -> None:
        has_meta = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if has_meta:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None or row[0] != _SCHEMA_VERSION:
                for table in _TABLES:
                    self._db.execute(f"DROP TABLE IF EXISTS {table}")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)", (_SCHEMA_VERSION,)
        )

    # -- writes ------------------------------------------------------------------------------
    def upsert(self, chunks: Sequence[Chunk], key_vectors: Sequence[Vectors]) -> None:
        if len(chunks) != len(key_vectors):
            raise ValueError("one vector matrix per chunk")
        with self._lock:
            changed = False
            self._db.execute("BEGIN")
            try:
                # What this write makes the version: the chunks it writes carry it.
                written_at = str(int(self._version_locked()) + 1)
                for chunk, vectors in zip(chunks, key_vectors, strict=True):
                    if vectors.shape[0] != 1 + len(chunk.keys):
                        raise ValueError(f"chunk {chunk.id}: one vector for content and per key")
                    digest = fingerprint(chunk)
                    row = self._db.execute(
                        "SELECT fingerprint FROM chunks WHERE key = ?", (_key(chunk),)
                    ).fetchone()
                    if row and row[0] == digest:
                        continue
                    self._delete_locked([chunk.id], chunk.tenant)
                    self._insert_locked(replace(chunk, kb_version=written_at), digest, vectors)
                    changed = True
                if changed:
                    self._bump_version_locked()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if changed:
                self._loaded = False

    def delete(self, chunk_ids: Sequence[str], *, tenant: str) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                removed = self._delete_locked(chunk_ids, tenant)
                if removed:
                    self._bump_version_locked()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if removed:
                self._loaded = False

    def fingerprints(self, tenant: str, source: str | None = None) -> dict[str, str]:
        sql, params = "SELECT id, fingerprint FROM chunks WHERE tenant = ?", [tenant]
        if source is not None:
            sql += " AND source = ?"
            params.append(source)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return {str(chunk_id): str(digest) for chunk_id, digest in rows}

    def catalog(self, tenant: str) -> dict[str, StoredChunk]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, source, fingerprint, json_extract(body, '$.kind'), "
                "json_extract(body, '$.lang') FROM chunks WHERE tenant = ?",
                (tenant,),
            ).fetchall()
        return {str(row[0]): StoredChunk(*row[1:]) for row in rows}

    def faq_questions(self, tenant: str) -> dict[str, Vectors]:
        with self._lock:
            self._ensure_loaded_locked()
            start, stop = self._ranges.get((tenant, None), (0, 0))
            first = self._question_first
            return {
                self._chunks[i].id: self._questions[first[i] : first[i + 1]].copy()
                for i in range(start, stop)
                if self._chunk_is_faq[i] and first[i + 1] > first[i]
            }

    def save_head(self, tenant: str, head: bytes | None, *, trained_at: int = 0) -> bool:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                if head is None:
                    cursor = self._db.execute(
                        "DELETE FROM heads WHERE tenant = ? AND trained_at <= ?",
                        (tenant, trained_at),
                    )
                else:
                    cursor = self._db.execute(
                        "INSERT INTO heads (tenant, body, trained_at) VALUES (?, ?, ?) "
                        "ON CONFLICT (tenant) DO UPDATE SET body = excluded.body, "
                        "trained_at = excluded.trained_at "
                        "WHERE excluded.trained_at >= heads.trained_at",
                        (tenant, head, trained_at),
                    )
                written = cursor.rowcount > 0
                if written:
                    self._bump_version_locked()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return written

    def load_head(self, tenant: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM heads WHERE tenant = ?", (tenant,)).fetchone()
        return bytes(row[0]) if row else None

    def head_tenants(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT tenant FROM heads ORDER BY tenant").fetchall()
        return [row[0] for row in rows]

    def _insert_locked(self, chunk: Chunk, digest: str, vectors: Vectors) -> None:
        body = json.dumps(asdict(chunk), ensure_ascii=False)
        self._db.execute(
            "INSERT INTO chunks (key, id, tenant, source, fingerprint, body) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (_key(chunk), chunk.id, chunk.tenant, chunk.source, digest, body),
        )
        unit = np.asarray(vectors, dtype=np.float32)
        texts = [chunk.content, *chunk.keys]
        for number, (text, vector) in enumerate(zip(texts, unit, strict=True)):
            cursor = self._db.execute(
                "INSERT INTO keys (chunk_key, is_question, lang, tenant, vector) "
                "VALUES (?, ?, ?, ?, ?)",
                (_key(chunk), int(number > 0), chunk.lang, chunk.tenant, vector.tobytes()),
            )
            lexical = " ".join(tokenize(text))
            self._db.execute(
                "INSERT INTO keys_fts (rowid, tokens, scope) VALUES (?, ?, ?)",
                (cursor.lastrowid, lexical, f"{_tenant_term(chunk.tenant)} lang{chunk.lang}"),
            )

    def _delete_locked(self, chunk_ids: Sequence[str], tenant: str) -> int:
        removed = 0
        for chunk_id in chunk_ids:
            key = _tenant_key(tenant, chunk_id)
            rowids = [
                r[0] for r in self._db.execute("SELECT rowid FROM keys WHERE chunk_key = ?", (key,))
            ]
            self._db.executemany("DELETE FROM keys_fts WHERE rowid = ?", [(r,) for r in rowids])
            self._db.execute("DELETE FROM keys WHERE chunk_key = ?", (key,))
            removed += self._db.execute("DELETE FROM chunks WHERE key = ?", (key,)).rowcount
        return removed

    def _bump_version_locked(self) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('version', '1') "
            "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    # -- reads -------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        with self._lock:
            return self._version_locked()

    def _version_locked(self) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        return str(row[0]) if row else "0"

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def _ensure_loaded_locked(self) -> None:
        """Lay the vectors out for scanning: chunks ordered by tenant and language, so a search
        reads one contiguous slice (a chat turn always names its language); one content row per
        chunk; question rows grouped by chunk, whose centroid similarity is the sum of its
        questions' similarities over the norm of their sum, so no centroid matrix is scanned."""
        if self._loaded:
            return
        chunks = [_chunk_from_json(body) for (body,) in self._db.execute("SELECT body FROM chunks")]
        chunks.sort(key=lambda c: (c.tenant, c.lang, c.id))
        position = {_key(chunk): i for i, chunk in enumerate(chunks)}
        key_rows = self._db.execute(
            "SELECT rowid, chunk_key, is_question, vector FROM keys ORDER BY rowid"
        ).fetchall()
        dim = len(key_rows[0][3]) // 4 if key_rows else 0
        content = np.zeros((len(chunks), dim), dtype=np.float32)
        questions: list[tuple[int, int, bytes]] = []
        self._chunk_of_rowid = {}
        for rowid, chunk_key, is_question, vector in key_rows:
            at = position[chunk_key]
            self._chunk_of_rowid[int(rowid)] = at
            if is_question:
                questions.append((at, int(rowid), vector))
            else:
                content[at] = np.frombuffer(vector, dtype=np.float32)
        questions.sort(key=lambda q: q[:2])
        question_chunk = np.fromiter(
            (q[0] for q in questions), dtype=np.int64, count=len(questions)
        )
        self._questions = (
            np.vstack([np.frombuffer(q[2], dtype=np.float32) for q in questions])
            if questions
            else np.zeros((0, dim), dtype=np.float32)
        )
        self._content = content
        self._chunks = chunks
        self._chunk_is_faq = np.array([c.kind == "faq" for c in chunks], dtype=bool)
        # Question rows of chunk c: self._questions[first[c]:first[c + 1]].
        self._question_first = np.searchsorted(question_chunk, np.arange(len(chunks) + 1))
        asked = np.flatnonzero(np.diff(self._question_first))
        norms = np.zeros(len(chunks), dtype=np.float32)
        if len(asked):
            sums = np.add.reduceat(self._questions, self._question_first[asked], axis=0)
            norms[asked] = np.linalg.norm(sums, axis=1)
        self._centroid_scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        self._ranges = {}
        for i, chunk in enumerate(chunks):
            for group in ((chunk.tenant, None), (chunk.tenant, chunk.lang)):
                start, _ = self._ranges.get(group, (i, i))
                self._ranges[group] = (start, i + 1)
        self._categories = {}
        self._tenants = {chunk.tenant for chunk in chunks}
        self._loaded = True

    def search(self, query: SearchQuery) -> list[SearchHit]:
        with self._lock:
            self._ensure_loaded_locked()
            start, stop = self._ranges.get((query.tenant, query.language), (0, 0))
            chunks, content_matrix = self._chunks[start:stop], self._content[start:stop]
            first = self._question_first[start : stop + 1]
            question_matrix = self._questions[first[0] : first[-1]]
            scale, is_faq = self._centroid_scale[start:stop], self._chunk_is_faq[start:stop]
            allowed = self._category_locked(query.category)[start:stop]
            chunk_of_rowid = self._chunk_of_rowid
            # BM25 is asked even with no share in the fused score: the FAQ head ranks with it.
            lexical_rows = self._lexical_locked(query) if chunks else []
        if not chunks or not allowed.any():
            return []

        vector = np.asarray(query.vector, dtype=np.float32)
        content = content_matrix @ vector
        asked = np.flatnonzero(first[1:] > first[:-1])  # chunks with questions
        nearest, centroid = content.copy(), np.zeros(len(chunks), dtype=np.float32)
        if len(asked):
            similarity = question_matrix @ vector
            starts = first[asked] - first[0]
            nearest[asked] = np.maximum.reduceat(similarity, starts)
            centroid[asked] = np.add.reduceat(similarity, starts) * scale[asked]
        dense = self._blend.dense(
            nearest=nearest, centroid=centroid, content=content, is_faq=is_faq
        )
        dense[~allowed] = -np.inf

        bm25 = np.zeros(len(chunks), dtype=np.float64)  # each chunk's best row
        kept = [
            (chunk_of_rowid[rowid] - start, score)
            for rowid, score in lexical_rows
            if start <= chunk_of_rowid[rowid] < stop and allowed[chunk_of_rowid[rowid] - start]
        ][:_LEXICAL_CANDIDATES]
        for at, score in kept:
            bm25[at] = max(bm25[at], score)
        lexical = relative_lexical(bm25)

        fused = self._blend.fused(dense, lexical)
        limit = min(query.limit, int(np.isfinite(fused).sum()))
        if limit <= 0:
            return []
        top = np.argpartition(-fused, limit - 1)[:limit]
        top = top[np.argsort(-fused[top], kind="stable")]
        return [
            SearchHit(
                chunk=chunks[i],
                score=float(fused[i]),
                dense=float(dense[i]),
                lexical=float(lexical[i]),
                nearest=float(nearest[i]),
            )
            for i in top
        ]

    def _category_locked(self, category: str | None) -> np.ndarray:
        """Which chunks a search of this category may see; cached until a write."""
        if category not in self._categories:
            self._categories[category] = np.array(
                [category is None or c.category == category for c in self._chunks], dtype=bool
            )
        return self._categories[category]

    def _lexical_locked(self, query: SearchQuery) -> list[tuple[int, float]]:
        """The best BM25 key rows (rowid, score) of the tenant; the caller filters the rest."""
        tenant = query.tenant
        tokens = sorted(set(tokenize(query.text)))
        if not tokens:
            return []
        common = max(_COMMON_MIN, int(_COMMON_SHARE * len(self._chunk_of_rowid)))
        placeholders = ", ".join("?" * len(tokens))
        frequent = {
            str(term)
            for term, rows in self._db.execute(
                f"SELECT term, doc FROM keys_vocab WHERE term IN ({placeholders})",
                tokens,
            )
            if rows > common
        }
        tokens = [token for token in tokens if token not in frequent]
        if not tokens:
            return []
        # Tenant is a term of the `scope` column, matched only when the index holds several
        # (a term in every row would make FTS5 walk every row); language is filtered below.
        terms = " OR ".join('"' + token.replace('"', '""') + '"' for token in tokens)
        match = f"tokens : ({terms})"
        if self._tenants != {tenant}:
            match += f" AND scope : {_tenant_term(tenant)}"
        sql = (
            "SELECT rowid, -bm25(keys_fts, 1.0, 0.0) FROM keys_fts WHERE keys_fts MATCH ? "
            "ORDER BY bm25(keys_fts, 1.0, 0.0) LIMIT ?"
        )
        rows = self._db.execute(sql, (match, 4 * _LEXICAL_CANDIDATES)).fetchall()
        return [(int(rowid), float(score)) for rowid, score in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _tenant_key(tenant: str, chunk_id: str) -> str:
    """Chunks are stored per tenant: the same id in two tenants is two chunks."""
    return f"{tenant}\x1f{chunk_id}"


def _key(chunk: Chunk) -> str:
    return _tenant_key(chunk.tenant, chunk.id)


def _tenant_term(tenant: str) -> str:
    """A tenant id as one FTS5 bareword, whatever characters the id has."""
    return "tenant" + tenant.encode().hex()


def _chunk_from_json(body: str) -> Chunk:
    data = json.loads(body)
    data["keys"] = tuple(data["keys"])
    return Chunk(**data)
