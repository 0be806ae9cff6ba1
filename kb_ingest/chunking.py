"""Structure-aware chunking: documents split at headings, then by length at sentence ends."""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
# Sentence ends in both languages: Chinese full stops need no following space.
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])|(?<=\.)\s+|\n+")

MAX_PASSAGE_CHARS = 600
OVERLAP_CHARS = 80


@dataclass(frozen=True, slots=True)
class Passage:
    headings: tuple[str, ...]
    body: str


@dataclass(frozen=True, slots=True)
class Document:
    title: str
    passages: tuple[Passage, ...]


def split_markdown(text: str, *, fallback_title: str) -> Document:
    """Sections under `##`/`###` headings become passages; the `#` heading is the title."""
    title = fallback_title
    path: list[str] = []
    body: list[str] = []
    passages: list[Passage] = []

    def flush() -> None:
        content = "\n".join(body).strip()
        if content:
            passages.extend(Passage(tuple(path), part) for part in split_long(content))
        body.clear()

    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match is None:
            body.append(line)
            continue
        flush()
        level, heading = len(match.group(1)), match.group(2)
        if level == 1:
            title, path = heading, []
        else:
            del path[level - 2 :]
            path.append(heading)
    flush()
    return Document(title=title, passages=tuple(passages))


def split_long(
    text: str, *, limit: int = MAX_PASSAGE_CHARS, overlap: int = OVERLAP_CHARS
) -> list[str]:
    """Pieces of at most `limit` characters, cut at sentence ends, each overlapping the last."""
    if len(text) <= limit:
        return [text]
    sentences = [s for s in _SENTENCE_END.split(text) if s and s.strip()]
    pieces: list[str] = []
    current = ""
    for sentence in sentences:
        rest = sentence
        while len(current) + len(rest) > limit:
            if current.strip():
                pieces.append(current.strip())
                current = current[-overlap:] if overlap else ""
            if len(current) + len(rest) > limit:  # one sentence longer than a piece: cut it
                room = limit - len(current)
                pieces.append((current + rest[:room]).strip())
                current, rest = "", rest[room:]
        current += rest if rest[-1:] in "。！？；\n" else rest + " "
    if current.strip():
        pieces.append(current.strip())
    return pieces
