"""Structure-aware chunking: documents split at headings, then by tokens at sentence ends.

Length is counted in `kefu.text.tokenize` tokens, the unit BM25 indexes: English words less stop
words, and Chinese character bigrams. Chinese has no spaces, so counting characters or words would
let a Chinese passage grow several times larger than an English one of the same budget.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from kefu.text import tokenize

# About 350-450 model tokens for English and fewer for Chinese: under multilingual-e5-small's
# 512-token window with the title and section that `Chunk.content` puts in front, and small
# enough that one passage stays on one topic. Every sample-KB section fits in one passage.
MAX_PASSAGE_TOKENS = 160
# A passage repeats the end of the one before it, so a sentence that needs the previous one's
# context is still understandable when retrieved alone.
OVERLAP_TOKENS = 32

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
# A sentence ends at a Chinese or English end mark (with closing quotes or brackets), at a full
# stop followed by a space (so "3.5" and "v1.2" stay whole), or at a line break.
_SENTENCE_END = re.compile(r"(?:[。！？；!?;]+[”’」』）)\"']*|\.(?=\s|\Z))\s*|\s*\n\s*")
# Inside a sentence too long for one passage, the next best cut: after a clause mark or a space.
_SOFT_BREAK = frozenset("，、,：:） )\t")


@dataclass(frozen=True, slots=True)
class Passage:
    headings: tuple[str, ...]
    body: str


@dataclass(frozen=True, slots=True)
class Document:
    title: str
    passages: tuple[Passage, ...]


class DocumentOutline:
    """Collects a document's text under its headings, in reading order.

    The first level-1 heading is the document's title; every other heading opens a section whose
    path is the chain of enclosing headings ("Returns > Exceptions"). Markdown and HTML both feed
    it, so both formats nest sections the same way.
    """

    def __init__(self, *, fallback_title: str) -> None:
        self._fallback_title = fallback_title
        self._title: str | None = None
        self._path: list[tuple[int, str]] = []
        self._body: list[str] = []
        self._passages: list[Passage] = []

    def add_heading(self, level: int, heading: str) -> None:
        self._flush()
        if level == 1 and self._title is None:
            self._title = heading
            return
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        self._path.append((level, heading))

    def add_text(self, text: str) -> None:
        self._body.append(text)

    def document(self) -> Document:
        self._flush()
        return Document(self._title or self._fallback_title, tuple(self._passages))

    def _flush(self) -> None:
        headings = tuple(heading for _, heading in self._path)
        self._passages += split_sections([Passage(headings, "".join(self._body))])
        self._body.clear()


def split_markdown(text: str, *, fallback_title: str) -> Document:
    """Sections at `#` headings (outside code fences); the first `#` heading is the title."""
    outline = DocumentOutline(fallback_title=fallback_title)
    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match is None:
            outline.add_text(line + "\n")
        else:
            outline.add_heading(len(match.group(1)), match.group(2))
    return outline.document()


def split_sections(sections: Iterable[Passage]) -> tuple[Passage, ...]:
    """Each section's body in passages of at most `MAX_PASSAGE_TOKENS`; empty sections dropped."""
    return tuple(
        Passage(section.headings, piece)
        for section in sections
        for piece in split_long(section.body)
    )


def split_long(
    text: str, *, limit: int = MAX_PASSAGE_TOKENS, overlap: int = OVERLAP_TOKENS
) -> list[str]:
    """`text` in pieces of at most `limit` tokens, cut at sentence ends, each overlapping the last.

    See `passage_spans` for where the cuts fall.
    """
    return [text[start:end] for start, end in passage_spans(text, limit=limit, overlap=overlap)]


def passage_spans(
    text: str, *, limit: int = MAX_PASSAGE_TOKENS, overlap: int = OVERLAP_TOKENS
) -> list[tuple[int, int]]:
    """Where `split_long` cuts `text`: `(start, end)` offsets, in order, whitespace trimmed.

    - Every piece holds at most `limit` tokens, without exception: a sentence longer than that is
      cut inside, after the last clause mark or space in the second half of what fits, or failing
      one (a long run of Chinese without punctuation) exactly where the budget ends.
    - Pieces end at sentence ends, and at a paragraph break when one falls in a piece's second
      half, so a paragraph is not cut when it need not be.
    - Each piece after the first starts with the longest tail of the one before it that holds at
      most `overlap` tokens, does not start inside an English word, and leaves room for at least
      one new sentence. Without that tail, pieces are adjacent.
    - Together the pieces cover every non-space character of `text`.
    """
    if limit < 1 or not 0 <= overlap < limit:
        raise ValueError(f"need limit >= 1 and 0 <= overlap < limit, got {limit} and {overlap}")
    if not text.strip():
        return []
    if _tokens(text) <= limit:
        return [_trimmed(text, 0, len(text))]
    units = [
        piece
        for start, end, paragraph_end in _sentences(text)
        for piece in _fitted(text, start, end, paragraph_end, limit)
    ]
    spans: list[tuple[int, int]] = []
    first = 0
    while first < len(units):
        start = units[first][0]
        if spans and overlap:
            start = _overlap_start(text, spans[-1][0], units[first], limit, overlap)
        last = first
        filled = [_tokens(text[start : units[first][1]])]
        while last + 1 < len(units):
            count = _tokens(text[start : units[last + 1][1]])
            if count > limit:
                break
            last += 1
            filled.append(count)
        if last + 1 < len(units) and not units[last][2]:
            for unit in range(last - 1, first - 1, -1):
                if units[unit][2] and filled[unit - first] * 2 >= limit:
                    last = unit
                    break
        spans.append((start, units[last][1]))
        first = last + 1
    return [_trimmed(text, start, end) for start, end in spans]


def _tokens(text: str) -> int:
    return len(tokenize(text))


def _sentences(text: str) -> list[tuple[int, int, bool]]:
    """`(start, end, ends_a_paragraph)` of each sentence, trailing whitespace included."""
    sentences: list[tuple[int, int, bool]] = []
    start = len(text) - len(text.lstrip())
    for match in _SENTENCE_END.finditer(text, start):
        paragraph_end = match.group().count("\n") >= 2
        if sentences and not text[start : match.start()].strip():
            # Only whitespace or end marks since the last end: part of that sentence.
            previous_start, _, previous_paragraph_end = sentences.pop()
            start, paragraph_end = previous_start, paragraph_end or previous_paragraph_end
        sentences.append((start, match.end(), paragraph_end))
        start = match.end()
    if start < len(text):
        sentences.append((start, len(text), True))
    return sentences


def _fitted(
    text: str, start: int, end: int, paragraph_end: bool, limit: int
) -> list[tuple[int, int, bool]]:
    """One sentence as one unit, or as several of at most `limit` tokens when it is longer."""
    units: list[tuple[int, int, bool]] = []
    while _tokens(text[start:end]) > limit:
        # The longest prefix within the budget. Token counts grow with length except that a
        # word can turn into a stop word as it completes ("th" -> "the"); the search keeps
        # `low` within the budget either way, so the cut never exceeds it.
        low, high = start + 1, end
        while high - low > 1:
            middle = (low + high) // 2
            if _tokens(text[start:middle]) <= limit:
                low = middle
            else:
                high = middle
        cut = _soft_cut(text, start, low)
        if _tokens(text[start:cut]) > limit:  # a stop-word quirk made the shorter cut longer
            cut = low
        units.append((start, cut, False))
        start = cut
    units.append((start, end, paragraph_end))
    return units


def _soft_cut(text: str, start: int, cut: int) -> int:
    """`cut`, moved back to a clause mark or space, else out of an English word, if one is near."""
    floor = start + (cut - start + 1) // 2
    for position in range(cut, floor - 1, -1):
        if position > start and text[position - 1] in _SOFT_BREAK:
            return position
    for position in range(cut, floor - 1, -1):
        if position > start and not _inside_word(text, position):
            return position
    return cut


def _overlap_start(
    text: str, previous_start: int, unit: tuple[int, int, bool], limit: int, overlap: int
) -> int:
    """Where the next piece starts: as far back into the previous piece as the budgets allow."""
    boundary, unit_end, _ = unit
    best = boundary
    for position in range(boundary - 1, previous_start - 1, -1):
        if text[position].isspace() or _inside_word(text, position):
            continue
        if _tokens(text[position:boundary]) > overlap:
            break
        if _tokens(text[position:unit_end]) > limit:
            break
        best = position
    return best


def _inside_word(text: str, position: int) -> bool:
    """Whether `position` splits an English word or number, which tokenizes as one unit."""
    if not 0 < position < len(text):
        return False
    before, after = text[position - 1], text[position]
    return before.isascii() and before.isalnum() and after.isascii() and after.isalnum()


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
