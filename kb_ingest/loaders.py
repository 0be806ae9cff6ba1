"""Loaders: one file in, the knowledge-base chunks it holds out."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from kb_ingest.chunking import split_markdown
from kefu.models import Chunk
from kefu.text import Language, detect_language


class UnsupportedFile(ValueError):
    """The file's format is not one the knowledge base reads."""


class InvalidFile(ValueError):
    """The file's format is known but its content cannot be parsed."""


def _language_of(path: Path, text: str) -> Language:
    """`returns-policy.zh.md` is Chinese by name; otherwise the text decides."""
    for suffix in path.suffixes[:-1]:
        if suffix in (".zh", ".en"):
            return "zh" if suffix == ".zh" else "en"
    return detect_language(text)


def load_faq_jsonl(
    path: Path, *, tenant: str = "default", source: str | None = None
) -> list[Chunk]:
    """FAQ entries, one JSON object a line: id, questions (standard first), answer, category.

    A line with `"kind": "out_of_scope"` holds example messages the service declines; it has
    no answer.
    """
    source = source or path.name
    chunks: list[Chunk] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            entry_id = str(entry["id"])
            questions = tuple(str(q).strip() for q in entry["questions"] if str(q).strip())
            out_of_scope = entry.get("kind") == "out_of_scope"
            answer = "" if out_of_scope else str(entry["answer"]).strip()
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InvalidFile(f"{path.name} line {number}: not an FAQ entry ({exc})") from exc
        if not questions or not (answer or out_of_scope):
            raise InvalidFile(f"{path.name} line {number}: an FAQ entry needs questions and answer")
        if entry_id in seen:
            raise InvalidFile(f"{path.name} line {number}: duplicate id {entry_id!r}")
        seen.add(entry_id)
        lang = entry.get("lang") or detect_language(questions[0] + answer)
        chunks.append(
            Chunk(
                id=entry_id,
                kind="out_of_scope" if out_of_scope else "faq",
                lang=lang,
                title=questions[0],
                text=answer,
                keys=questions,
                category=str(entry.get("category", "")),
                source=source,
                tenant=tenant,
            )
        )
    return chunks


def load_markdown(path: Path, *, tenant: str = "default", source: str | None = None) -> list[Chunk]:
    """A document split at its headings into passages, each titled by its heading path."""
    source = source or path.name
    text = path.read_text(encoding="utf-8")
    lang = _language_of(path, text)
    chunks: list[Chunk] = []
    document = split_markdown(text, fallback_title=path.stem)
    for number, passage in enumerate(document.passages, start=1):
        heading = " > ".join(passage.headings)
        chunks.append(
            Chunk(
                id=f"{source}#{number:03d}",
                kind="passage",
                lang=lang,
                title=document.title,
                text=passage.body,
                keys=(),
                source=source,
                section=heading,
                tenant=tenant,
            )
        )
    return chunks


LOADERS: dict[str, Callable[..., list[Chunk]]] = {
    ".jsonl": load_faq_jsonl,
    ".md": load_markdown,
    ".markdown": load_markdown,
}


def load(path: Path, *, tenant: str = "default", source: str | None = None) -> list[Chunk]:
    """The chunks of one file. `source` names it in chunk ids and metadata (default: its name;
    the ingest Lambda passes the S3 key), so the same file always yields the same ids."""
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise UnsupportedFile(f"{path.name}: unsupported format {path.suffix or '(none)'}")
    return loader(path, tenant=tenant, source=source)
