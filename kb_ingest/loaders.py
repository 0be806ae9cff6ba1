"""Loaders: one file in, the knowledge-base chunks it holds out.

| suffix | what it holds | loader |
|---|---|---|
| `.jsonl` | FAQ entries, or transcripts (see `load_jsonl`) | `load_jsonl` |
| `.csv`, `.xlsx` | FAQ entries, one a row (see `kb_ingest.faq_tables`) | `load_faq_csv`, `_xlsx` |
| `.md`, `.markdown` | a document with `#` headings, optional front matter | `load_markdown` |
| `.html`, `.htm` | a document with `<h1>`…`<h6>` headings | `load_html` |
| `.txt` | a document of paragraphs | `load_text` |
| `.pdf` | a document with a text layer, page by page | `load_pdf` |

Every loader takes `(path, *, tenant, source)`. `source` names the file in chunk metadata and ids
(default: the file's name; the ingest Lambda passes the S3 key), so re-ingesting the same file
yields the same ids: `{source}#001`, `{source}#002` … for passages.

A document's language is, in order: what the file declares (front matter `lang:`, `<html
lang>`), a `.zh`/`.en` suffix in its name (`returns.zh.md`), or the language of its whole text.
Its category is front matter `category:` or `<meta name="category">`, else empty.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kb_ingest.chunking import (
    Document,
    DocumentOutline,
    Passage,
    split_markdown,
    split_sections,
)
from kb_ingest.faq_tables import load_faq_csv, load_faq_xlsx
from kb_ingest.formats import InvalidFile, UnsupportedFile, declared_language, read_text
from kb_ingest.transcripts import is_transcript_file, load_transcripts
from kefu.models import Chunk
from kefu.text import Language, detect_language

if TYPE_CHECKING:
    from bs4 import Tag

# A first line this short, with no sentence end, is a plain-text document's title.
_TITLE_MAX_CHARS = 80
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", re.DOTALL)
_FRONT_MATTER_FIELD = re.compile(r"^([A-Za-z_][\w-]*)\s*:\s*(.*?)\s*$")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_LINE_BREAK_IN_PARAGRAPH = re.compile(r"(?<=\S)[ \t]*\n[ \t]*(?=\S)")
_HTML_DROPPED = frozenset(
    ["script", "style", "nav", "noscript", "template", "footer", "head", "title", "svg"]
)
# Elements that stand apart from their neighbours: a paragraph break around blocks, a line break
# around items, a space between table cells.
_HTML_BLOCKS = frozenset((
    "address", "article", "aside", "blockquote", "details", "dl", "div", "fieldset", "figure",
    "form", "header", "hr", "main", "ol", "p", "pre", "section", "table", "ul",
))  # fmt: skip
_HTML_LINES = frozenset(["br", "caption", "dd", "dt", "figcaption", "li", "summary", "tr"])
_HTML_CELLS = frozenset(["td", "th"])
# Marks a paragraph break while the text is collected; a list item's line break inside a list's
# paragraph break must not turn into a paragraph of its own.
_HTML_PARAGRAPH = "\x00"
_HTML_HEADINGS = {f"h{level}": level for level in range(1, 7)}


def load_faq_jsonl(
    path: Path, *, tenant: str = "default", source: str | None = None
) -> list[Chunk]:
    """FAQ entries, one JSON object a line: id, questions (standard first), answer, category,
    lang (`zh`/`en`, or `zh-CN` …; detected when absent).

    A line with `"kind": "out_of_scope"` holds example messages the service declines; it has
    no answer.
    """
    source = source or path.name
    chunks: list[Chunk] = []
    seen: set[str] = set()
    for number, line in enumerate(read_text(path).splitlines(), start=1):
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
        try:
            lang = declared_language(entry.get("lang")) or detect_language(questions[0] + answer)
        except ValueError as exc:
            raise InvalidFile(f"{path.name} line {number}: {exc}") from exc
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


def load_jsonl(path: Path, *, tenant: str = "default", source: str | None = None) -> list[Chunk]:
    """FAQ entries, or the question-and-answer pairs mined from transcripts.

    Both are JSONL; a `*.transcripts.jsonl` name or a first record with `turns` marks
    transcripts (see `kb_ingest.transcripts`).
    """
    if is_transcript_file(path):
        return load_transcripts(path, tenant=tenant, source=source)
    return load_faq_jsonl(path, tenant=tenant, source=source)


def load_markdown(path: Path, *, tenant: str = "default", source: str | None = None) -> list[Chunk]:
    """A document split at its headings into passages, each titled by its heading path.

    Optional front matter (`---` lines around `key: value` lines) may set `lang` and `category`.
    """
    fields, text = _front_matter(read_text(path))
    document = split_markdown(text, fallback_title=path.stem)
    lang = _document_language(path, text, fields.get("lang"))
    return _passage_chunks(
        document,
        lang=lang,
        category=fields.get("category", ""),
        source=source or path.name,
        tenant=tenant,
    )


def load_html(path: Path, *, tenant: str = "default", source: str | None = None) -> list[Chunk]:
    """A web page split at `<h1>`…`<h6>` like Markdown; scripts, styles and navigation dropped.

    The title is the first `<h1>`, else `<title>`, else the file name. The page's encoding comes
    from its BOM or `<meta charset>`, else it is guessed.
    """
    # Imported here: most ingest runs read no HTML, and a cold start pays for every import.
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(path.read_bytes(), "html.parser")
    page_title = soup.title.get_text(" ", strip=True) if soup.title else ""
    meta = soup.find("meta", attrs={"name": "category"})
    category = str(meta.get("content") or "").strip() if meta else ""
    root = soup.find("html")
    declared = root.get("lang") if root else None
    document = _html_document(soup.body or soup, fallback_title=page_title or path.stem)
    text = "\n".join(passage.body for passage in document.passages)
    return _passage_chunks(
        document,
        lang=_document_language(path, text, declared),
        category=category,
        source=source or path.name,
        tenant=tenant,
    )


def load_text(path: Path, *, tenant: str = "default", source: str | None = None) -> list[Chunk]:
    """A plain-text document: its paragraphs, in passages of the usual length, in one section.

    Plain text has no headings, so its title is its first line when that line stands alone and
    reads like a title (short, no sentence end); otherwise the file name.
    """
    text = read_text(path).strip()
    title, body = path.stem, text
    first = _PARAGRAPH_BREAK.split(text, maxsplit=1)[0]
    if (
        first != text
        and "\n" not in first
        and len(first) <= _TITLE_MAX_CHARS
        and first[-1:] not in "。！？；.!?;:：,，"
    ):
        title, body = first.strip(), text[len(first) :]
    document = Document(title, split_sections([Passage((), body)]))
    return _passage_chunks(
        document,
        lang=_document_language(path, text, None),
        category="",
        source=source or path.name,
        tenant=tenant,
    )


def load_pdf(path: Path, *, tenant: str = "default", source: str | None = None) -> list[Chunk]:
    """A PDF's text layer, page by page: passages never span pages, and each names its page.

    The section is `p. N`, so an answer can cite the page. The title is the PDF's own title
    metadata, else the file name. A PDF without a text layer (a scan) is refused, not indexed
    empty: it needs OCR first.
    """
    # Imported here: most ingest runs read no PDF, and a cold start pays for every import.
    from pypdf import PdfReader

    pages: list[str] = []
    # pypdf reports a damaged or unusual file with whichever error its parser hit (its own,
    # ValueError, KeyError, zlib …); every one of them means this file cannot be read.
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            reader.decrypt("")
        title = str(reader.metadata.title or "").strip() if reader.metadata else ""
    except Exception as exc:
        raise InvalidFile(f"{path.name}: not a readable PDF ({exc})") from exc
    for number, page in enumerate(reader.pages, start=1):
        try:
            pages.append(_unwrapped(page.extract_text()))
        except Exception as exc:
            raise InvalidFile(f"{path.name} page {number}: text cannot be read ({exc})") from exc
    if not any(page.strip() for page in pages):
        raise InvalidFile(f"{path.name}: no text layer (a scanned PDF needs OCR first)")
    document = Document(
        title or path.stem,
        split_sections(Passage((f"p. {n}",), text) for n, text in enumerate(pages, start=1)),
    )
    return _passage_chunks(
        document,
        lang=_document_language(path, "\n".join(pages), None),
        category="",
        source=source or path.name,
        tenant=tenant,
    )


LOADERS: dict[str, Callable[..., list[Chunk]]] = {
    ".jsonl": load_jsonl,
    ".csv": load_faq_csv,
    ".xlsx": load_faq_xlsx,
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".html": load_html,
    ".htm": load_html,
    ".txt": load_text,
    ".pdf": load_pdf,
}


def load(path: Path, *, tenant: str = "default", source: str | None = None) -> list[Chunk]:
    """The chunks of one file. `source` names it in chunk ids and metadata (default: its name;
    the ingest Lambda passes the S3 key), so the same file always yields the same ids."""
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise UnsupportedFile(f"{path.name}: unsupported format {path.suffix or '(none)'}")
    return loader(path, tenant=tenant, source=source)


def _passage_chunks(
    document: Document, *, lang: Language, category: str, source: str, tenant: str
) -> list[Chunk]:
    return [
        Chunk(
            id=f"{source}#{number:03d}",
            kind="passage",
            lang=lang,
            title=document.title,
            text=passage.body,
            keys=(),
            category=category,
            source=source,
            section=" > ".join(passage.headings),
            tenant=tenant,
        )
        for number, passage in enumerate(document.passages, start=1)
    ]


def _document_language(path: Path, text: str, declared: object) -> Language:
    """What the file declares, else a `.zh`/`.en` name suffix, else what its text says."""
    try:
        language = declared_language(declared)
    except ValueError as exc:
        raise InvalidFile(f"{path.name}: {exc}") from exc
    if language:
        return language
    for suffix in path.suffixes[:-1]:
        if suffix in (".zh", ".en"):
            return "zh" if suffix == ".zh" else "en"
    return detect_language(text)


def _front_matter(text: str) -> tuple[dict[str, str], str]:
    """`key: value` fields of a leading `---` block, and the text after it.

    A leading `---` block with any other kind of line is a horizontal rule, not front matter.
    """
    match = _FRONT_MATTER.match(text)
    if match is None:
        return {}, text
    fields: dict[str, str] = {}
    for line in match.group(1).splitlines():
        if not line.strip():
            continue
        field = _FRONT_MATTER_FIELD.match(line)
        if field is None:
            return {}, text
        fields[field.group(1).lower()] = field.group(2).strip("'\"")
    return fields, text[match.end() :]


def _unwrapped(text: str) -> str:
    """Lines joined into paragraphs, as they were before a PDF page or HTML source wrapped them.

    Lines join with a space, except between two wide (Chinese) characters, which never had one.
    """

    def join(match: re.Match[str]) -> str:
        before, after = text[match.start() - 1], text[match.end()]
        wide = {"W", "F"}
        east_asian = unicodedata.east_asian_width
        return "" if east_asian(before) in wide and east_asian(after) in wide else " "

    return _LINE_BREAK_IN_PARAGRAPH.sub(join, text)


def _html_document(root: Tag, *, fallback_title: str) -> Document:
    """The outline of an HTML page: headings in order, and the text under each."""
    from bs4 import NavigableString, Tag
    from bs4.element import PreformattedString

    outline = DocumentOutline(fallback_title=fallback_title)
    buffer: list[str] = []

    def flush() -> None:
        paragraphs = (
            "\n".join(" ".join(line.split()) for line in part.split("\n") if line.strip())
            for part in "".join(buffer).split(_HTML_PARAGRAPH)
        )
        outline.add_text("\n\n".join(paragraph for paragraph in paragraphs if paragraph))
        buffer.clear()

    def walk(node: Tag, preformatted: bool) -> None:
        for child in node.children:
            if isinstance(child, Tag):
                name = child.name.lower()
                if name in _HTML_DROPPED:
                    continue
                if name in _HTML_HEADINGS:
                    heading = " ".join(child.get_text(" ").split())
                    if heading:
                        flush()
                        outline.add_heading(_HTML_HEADINGS[name], heading)
                    continue
                around = (
                    _HTML_PARAGRAPH
                    if name in _HTML_BLOCKS
                    else "\n"
                    if name in _HTML_LINES
                    else " "
                    if name in _HTML_CELLS
                    else ""
                )
                buffer.append(around)
                walk(child, preformatted or name == "pre")
                buffer.append(around)
            elif isinstance(child, NavigableString) and not isinstance(child, PreformattedString):
                # Outside <pre>, a run of whitespace (line breaks included) renders as one space.
                text = str(child).replace(_HTML_PARAGRAPH, "")
                buffer.append(text if preformatted else re.sub(r"\s+", " ", _unwrapped(text)))

    walk(root, False)
    flush()
    return outline.document()
