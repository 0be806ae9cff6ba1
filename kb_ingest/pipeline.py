"""The indexing pipeline: files to chunks to vectors to the index, skipping what is unchanged."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kb_ingest.loaders import LOADERS, InvalidFile, load
from kefu.models import Chunk, fingerprint
from kefu.ports import Embedder, KnowledgeIndex

if TYPE_CHECKING:
    from kefu.ports import Vectors

EMBED_BATCH = 64


@dataclass(slots=True)
class IngestReport:
    """What an ingest did. `entries` counts every chunk read (FAQ entries, out-of-scope
    entries and passages); `faq_entries` the FAQ entries among them."""

    files: int = 0
    entries: int = 0
    faq_entries: int = 0
    chunks_written: int = 0
    chunks_unchanged: int = 0
    chunks_removed: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    version: str = ""

    def summary(self) -> str:
        lines = [
            f"files {self.files}, FAQ entries {self.faq_entries}, chunks {self.entries} "
            f"({self.chunks_written} written, {self.chunks_unchanged} unchanged, "
            f"{self.chunks_removed} removed), {self.seconds:.1f} s, KB version {self.version}"
        ]
        lines += [f"  failed: {name}: {reason}" for name, reason in self.failures]
        return "\n".join(lines)


def expand(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    """Files as given, and the readable files under each folder, in a stable order, each with
    its source name: a file's name, or its path under the folder given (as an S3 key would be)."""
    files: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            files += [
                (p, p.relative_to(path).as_posix())
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix.lower() in LOADERS
            ]
        else:
            files.append((path, path.name))
    return files


def _check_ids_are_free(
    chunks: Sequence[Chunk],
    source: str,
    owner: dict[str, str],
    existing: dict[str, str],
    index: KnowledgeIndex,
    tenant: str,
) -> None:
    """Refuse a file whose chunk ids another file already has: one would silently replace
    the other (ids are unique within a tenant)."""
    ids = {c.id for c in chunks}
    taken = {i: owner[i] for i in ids if i in owner}
    stored_elsewhere = (ids & existing.keys()) - index.fingerprints(tenant, source=source).keys()
    taken.update((i, "another file already indexed") for i in stored_elsewhere if i not in owner)
    if len(ids) < len(chunks):
        raise InvalidFile(f"{source}: the same id appears twice in the file")
    if taken:
        first = sorted(taken)[0]
        raise InvalidFile(
            f"{source}: {len(taken)} id(s) already belong to {taken[first]} (e.g. {first!r}); "
            "ids must be unique within a tenant"
        )


def embed_chunks(embedder: Embedder, chunks: Sequence[Chunk]) -> list[Vectors]:
    """Per chunk, its content's vector then one per question key, embedded in batches."""
    passages = [(i, c.content) for i, c in enumerate(chunks)]
    questions = [(i, key) for i, c in enumerate(chunks) for key in c.keys]
    rows: dict[int, list[Vectors]] = {i: [] for i in range(len(chunks))}
    for texts, encode in (
        (passages, embedder.embed_passages),
        (questions, embedder.embed_queries),
    ):
        for start in range(0, len(texts), EMBED_BATCH):
            batch = texts[start : start + EMBED_BATCH]
            vectors = encode([text for _, text in batch])
            for (owner, _), vector in zip(batch, vectors, strict=True):
                rows[owner].append(vector)
    return [np.vstack(rows[i]) for i in range(len(chunks))]


def ingest(
    paths: Iterable[Path],
    *,
    index: KnowledgeIndex,
    embedder: Embedder,
    tenant: str = "default",
    prune: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> IngestReport:
    """Index every chunk of `paths`; with `prune`, remove the tenant's chunks no file produced.

    A file that cannot be read is reported and skipped; the others still land. `progress` is
    told `(stage, done, total)` as files are read ("read") and chunks written ("write").
    """
    started = time.perf_counter()
    report = IngestReport()
    chunks: list[Chunk] = []
    files = expand(paths)
    existing = index.fingerprints(tenant)
    owner: dict[str, str] = {}  # chunk id -> the source that has it in this ingest
    for number, (path, source) in enumerate(files, start=1):
        try:
            loaded = load(path, tenant=tenant, source=source)
            # With prune the given files are the whole KB: what others had is going anyway.
            stored = {} if prune else existing
            _check_ids_are_free(loaded, source, owner, stored, index, tenant)
        except (ValueError, OSError) as exc:
            report.failures.append((source, str(exc)))
            continue
        finally:
            if progress:
                progress("read", number, len(files))
        report.files += 1
        owner.update((c.id, source) for c in loaded)
        chunks += loaded
    report.entries = len(chunks)
    report.faq_entries = sum(c.kind == "faq" for c in chunks)

    changed = [c for c in chunks if existing.get(c.id) != fingerprint(c)]
    report.chunks_unchanged = len(chunks) - len(changed)
    for start in range(0, len(changed), 256):
        batch = changed[start : start + 256]
        index.upsert(batch, embed_chunks(embedder, batch))
        if progress:
            progress("write", start + len(batch), len(changed))
    report.chunks_written = len(changed)

    if prune and not report.failures:
        stale = sorted(set(existing) - {c.id for c in chunks})
        if stale:
            index.delete(stale, tenant=tenant)
        report.chunks_removed = len(stale)
    report.version = index.version
    report.seconds = time.perf_counter() - started
    return report


def sync_source(
    path: Path,
    *,
    source: str,
    index: KnowledgeIndex,
    embedder: Embedder,
    tenant: str = "default",
) -> IngestReport:
    """Make the index hold exactly what one file holds now, under the name `source`.

    Unchanged chunks are skipped, changed ones replaced, and chunks the file no longer has
    removed. A file that cannot be parsed raises (`ValueError`, `OSError`) and changes nothing.
    """
    started = time.perf_counter()
    chunks = load(path, tenant=tenant, source=source)
    _check_ids_are_free(chunks, source, {}, index.fingerprints(tenant), index, tenant)
    existing = index.fingerprints(tenant, source=source)
    changed = [c for c in chunks if existing.get(c.id) != fingerprint(c)]
    for start in range(0, len(changed), 256):
        batch = changed[start : start + 256]
        index.upsert(batch, embed_chunks(embedder, batch))
    stale = sorted(set(existing) - {c.id for c in chunks})
    if stale:
        index.delete(stale, tenant=tenant)
    return IngestReport(
        files=1,
        entries=len(chunks),
        faq_entries=sum(c.kind == "faq" for c in chunks),
        chunks_written=len(changed),
        chunks_unchanged=len(chunks) - len(changed),
        chunks_removed=len(stale),
        seconds=time.perf_counter() - started,
        version=index.version,
    )


def remove_source(source: str, *, index: KnowledgeIndex, tenant: str = "default") -> int:
    """Remove every chunk a deleted file had; returns how many."""
    stale = sorted(index.fingerprints(tenant, source=source))
    if stale:
        index.delete(stale, tenant=tenant)
    return len(stale)
