"""The indexing pipeline: files to chunks to vectors to the index, skipping what is unchanged."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kb_ingest.head_training import Training, outdated, train, training_cells
from kb_ingest.loaders import LOADERS, InvalidFile, load
from kefu.errors import DependencyUnavailable, IndexWriteRejected
from kefu.models import Chunk, fingerprint
from kefu.observability import logger
from kefu.ports import Embedder, KnowledgeIndex, KnowledgeWriter

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
    head_classes: int = 0
    head_skipped: str = ""

    def summary(self) -> str:
        lines = [
            f"files {self.files}, FAQ entries {self.faq_entries}, chunks {self.entries} "
            f"({self.chunks_written} written, {self.chunks_unchanged} unchanged, "
            f"{self.chunks_removed} removed), {self.seconds:.1f} s, KB version {self.version}"
        ]
        if self.head_classes:
            lines.append(f"FAQ head trained over {self.head_classes} entries")
        if self.head_skipped:
            lines.append(f"FAQ head not trained: {self.head_skipped}")
        lines += [f"  failed: {name}: {reason}" for name, reason in self.failures]
        return "\n".join(lines)


def expand(paths: Iterable[Path], *, root: Path | None = None) -> list[tuple[Path, str]]:
    """The readable files of `paths` (files as given, folders walked), in a stable order, each
    with its source name, as an S3 key names a file by its path in the bucket.

    With `root` (the CLI passes the working directory), a file is named by its path under it,
    so the same file has the same name however it was named on the command line; a file
    outside `root` is named by its absolute path. Without it, a file in a folder given is named
    by its path under that folder, and a file given by its name.
    """
    base = root.resolve() if root is not None else None
    found: dict[str, Path] = {}
    for path in paths:
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in LOADERS
            )
            names = [p.relative_to(path).as_posix() for p in files]
        else:
            files, names = [path], [path.name]
        for file, name in zip(files, names, strict=True):
            found.setdefault(name if base is None else _under(file, base), file)
    return [(file, source) for source, file in found.items()]


def _under(file: Path, base: Path) -> str:
    absolute = file.resolve()
    return (
        absolute.relative_to(base).as_posix()
        if absolute.is_relative_to(base)
        else absolute.as_posix()
    )


def _check_ids_are_free(
    chunks: Sequence[Chunk], source: str, claimed: dict[str, str], stored_elsewhere: set[str]
) -> None:
    """Refuse a file whose chunk ids another file has: one would silently replace the other
    (ids are unique within a tenant)."""
    ids = [c.id for c in chunks]
    if len(set(ids)) < len(ids):
        raise InvalidFile(f"{source}: the same id appears twice in the file")
    taken = {i: claimed[i] for i in ids if i in claimed}
    taken.update((i, "a file already indexed") for i in ids if i in stored_elsewhere)
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


WRITE_BATCH = 256


def _write_changed(
    index: KnowledgeIndex,
    embedder: Embedder,
    chunks: Sequence[Chunk],
    existing: dict[str, str],
    progress: Callable[[str, int, int], None] | None = None,
) -> int:
    """Embed and write the chunks whose fingerprint differs from `existing` (id -> stored
    fingerprint), in batches; returns how many were written."""
    changed = [c for c in chunks if existing.get(c.id) != fingerprint(c)]
    for start in range(0, len(changed), WRITE_BATCH):
        batch = changed[start : start + WRITE_BATCH]
        index.upsert(batch, embed_chunks(embedder, batch))
        if progress:
            progress("write", start + len(batch), len(changed))
    return len(changed)


def ingest(
    paths: Iterable[Path],
    *,
    index: KnowledgeIndex,
    embedder: Embedder,
    tenant: str = "default",
    prune: bool = False,
    root: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    train_head: bool = True,
    training: Training = Training(),  # noqa: B008 (frozen)
) -> IngestReport:
    """Make the index hold what each readable file of `paths` holds now; with `prune`, also
    remove the tenant's chunks that no given file produced (the files are the whole KB). Then,
    if anything changed (or the tenant has no head yet), retrain the tenant's FAQ head, unless
    `train_head` is false (`training` says how).

    Each file replaces its own chunks: what it no longer has is removed, and an entry may move
    from one file to another within one run. A file that cannot be read, or whose ids another
    file has, is reported and skipped, and its stored chunks stay; the others still land.
    `progress` is told `(stage, done, total)` as files are read ("read") and chunks written
    ("write").
    """
    started = time.perf_counter()
    report = IngestReport()
    files = expand(paths, root=root)
    stored = index.catalog(tenant)
    existing = {chunk_id: chunk.fingerprint for chunk_id, chunk in stored.items()}
    # What each file of this run had before, and what every other file has: those ids are taken.
    before: dict[str, set[str]] = {source: set() for _, source in files}
    for chunk_id, chunk in stored.items():
        if chunk.source in before:
            before[chunk.source].add(chunk_id)
    in_run = set().union(*before.values())
    stored_elsewhere = set() if prune else set(existing) - in_run

    loaded: dict[str, list[Chunk]] = {}
    claimed: dict[str, str] = {}  # chunk id -> the file of this run that has it
    for number, (path, source) in enumerate(files, start=1):
        try:
            chunks = load(path, tenant=tenant, source=source)
            _check_ids_are_free(chunks, source, claimed, stored_elsewhere)
        except (ValueError, OSError) as exc:
            report.failures.append((source, str(exc)))
            # Its stored chunks stay, and stay its own.
            stored_elsewhere |= before[source] - set(claimed)
            continue
        finally:
            if progress:
                progress("read", number, len(files))
        report.files += 1
        claimed.update((c.id, source) for c in chunks)
        loaded[source] = chunks
    chunks = [c for file_chunks in loaded.values() for c in file_chunks]
    report.entries = len(chunks)
    report.faq_entries = sum(c.kind == "faq" for c in chunks)

    # Removed first, so that an entry that moved to another file is written after its old copy
    # is gone (chunks are keyed by tenant and id).
    stale = {i for source in loaded for i in before[source]} - set(claimed)
    if prune and not report.failures:
        stale |= set(existing) - set(claimed)
    if stale:
        index.delete(sorted(stale), tenant=tenant)
    report.chunks_removed = len(stale)

    report.chunks_written = _write_changed(index, embedder, chunks, existing, progress)
    report.chunks_unchanged = len(chunks) - report.chunks_written
    changed = report.chunks_written or stale
    if train_head and (changed or outdated(index.load_head(tenant), training)):
        try:
            report.head_classes, report.head_skipped = retrain_head(
                index, tenant=tenant, training=training
            )
        except DependencyUnavailable as exc:
            # The chunks are stored; the next ingest retrains the head.
            report.head_skipped = f"training failed ({exc}); the next ingest retries it"
    report.version = index.version
    report.seconds = time.perf_counter() - started
    return report


def retrain_head(
    index: KnowledgeIndex,
    *,
    tenant: str = "default",
    training: Training = Training(),  # noqa: B008 (frozen)
) -> tuple[int, str]:
    """Train the tenant's FAQ head on what the index holds now and store it, or remove a stored
    one when none can be trained; returns how many entries it tells apart, and why a KB of
    several entries has no head. A head the index refuses (too large for a request) is no
    head: the KB is then ranked by similarity alone. The head is stamped with the KB version
    read before its questions, so that of concurrent ingests the one that saw the newest KB
    keeps its head."""
    trained_at = int(index.version)
    questions = index.faq_questions(tenant)
    languages = None
    if training.on_nearest(questions):  # each question against the entries of its language
        languages = {i: c.lang for i, c in index.catalog(tenant).items() if c.kind == "faq"}
    trained = train(questions, languages, training)
    if trained is not None:
        try:
            if not index.save_head(tenant, trained.to_bytes(), trained_at=trained_at):
                return 0, "a head trained on a newer version of the KB is already stored"
        except IndexWriteRejected as exc:
            index.save_head(tenant, None, trained_at=trained_at)
            return 0, f"the index refused it ({exc}); FAQ entries are ranked by similarity alone"
        return len(trained.ids), ""
    # An old head must not rank a KB it was not trained on.
    index.save_head(tenant, None, trained_at=trained_at)
    if len(questions) < 2:
        return 0, ""
    cells = training_cells(questions)
    return 0, (
        f"{cells:,} question-entry pairs are over the training budget "
        f"({training.max_nearest_cells:,}); FAQ entries are ranked by similarity alone"
    )


def retrain_heads(
    index: KnowledgeIndex,
    tenants: Iterable[str],
    *,
    training: Training = Training(),  # noqa: B008 (frozen)
) -> list[str]:
    """Retrain the FAQ head of each tenant (whose KB changed, or whose head is outdated), one
    after another, and return those whose training ran (a head the index refused included).
    A failure is logged and the others go on; until a later run retrains it, a stale head is
    not used for the entries it does not know (`kefu.retrieval`)."""
    done = []
    for tenant in tenants:
        try:
            classes, skipped = retrain_head(index, tenant=tenant, training=training)
        except Exception:
            logger.exception("FAQ head not retrained", extra={"tenant": tenant})
        else:
            done.append(tenant)
            logger.info(
                "FAQ head retrained" if classes else "no FAQ head",
                extra={"tenant": tenant, "entries": classes, "reason": skipped or None},
            )
    return done


def outdated_heads(
    index: KnowledgeIndex,
    training: Training = Training(),  # noqa: B008 (frozen)
) -> list[str]:
    """The tenants whose stored FAQ head is outdated (`head_training.outdated`: stored by an
    earlier release without the spread, trained otherwise, or unreadable), sorted: what an
    upgrade retrains.
    A tenant without a head is not among them: it has none by design (one entry, over the
    training budget, refused by the index) or its next change trains one. Each head is read
    whole (its archive says what it holds), one tenant after another."""
    return [
        tenant for tenant in index.head_tenants() if outdated(index.load_head(tenant), training)
    ]


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
    stored = index.catalog(tenant)
    existing = {i: c.fingerprint for i, c in stored.items() if c.source == source}
    _check_ids_are_free(chunks, source, {}, set(stored) - set(existing))
    written = _write_changed(index, embedder, chunks, existing)
    stale = sorted(set(existing) - {c.id for c in chunks})
    if stale:
        index.delete(stale, tenant=tenant)
    return IngestReport(
        files=1,
        entries=len(chunks),
        faq_entries=sum(c.kind == "faq" for c in chunks),
        chunks_written=written,
        chunks_unchanged=len(chunks) - written,
        chunks_removed=len(stale),
        seconds=time.perf_counter() - started,
        version=index.version,
    )


def remove_source(source: str, *, index: KnowledgeWriter, tenant: str = "default") -> int:
    """Remove every chunk a deleted file had; returns how many."""
    stale = sorted(index.fingerprints(tenant, source=source))
    if stale:
        index.delete(stale, tenant=tenant)
    return len(stale)
