"""FAQ spreadsheets: CSV and XLSX, one entry a row, as customer-service teams keep them.

The first non-empty row is the header. Column names are matched without regard to case, spaces,
hyphens or underscores; the accepted names are in `COLUMNS`:

| column | accepted headers | |
|---|---|---|
| question | question, standard question, 标准问题, 标准问, 问题 | required |
| similar | similar questions, similar, 相似问题, 相似问, 相似问法 | optional: see below |
| answer | answer, 答案, 标准答案, 回答 | required |
| category | category, 分类, 类别 | optional |
| id | id, 编号 | optional: missing ids are derived from the source and the question |
| lang | lang, language, 语言 | optional: `zh`/`en` (or `zh-CN` …); detected when empty |

One similar-questions cell holds several questions, separated by line breaks, `|`, `｜` or `；`.
Other named columns (notes, owner, 备注 …) are ignored. A value under no header, or a cell past
the last header (in a CSV, usually an unquoted comma in an answer), is refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from kb_ingest.formats import InvalidFile, declared_language, read_text
from kefu.models import Chunk
from kefu.text import detect_language

COLUMNS: dict[str, tuple[str, ...]] = {
    "question": ("question", "standard_question", "标准问题", "标准问", "问题"),
    "similar": ("similar_questions", "similar", "相似问题", "相似问", "相似问法"),
    "answer": ("answer", "答案", "标准答案", "回答"),
    "category": ("category", "分类", "类别"),
    "id": ("id", "编号"),
    "lang": ("lang", "language", "语言"),
}
REQUIRED_COLUMNS = ("question", "answer")
_COLUMN_OF = {alias: column for column, aliases in COLUMNS.items() for alias in aliases}
_SIMILAR_SEPARATOR = re.compile(r"[\n|｜；]+")


def load_faq_csv(path: Path, *, tenant: str = "default", source: str | None = None) -> list[Chunk]:
    """FAQ entries from a UTF-8 CSV (with or without the BOM Excel writes)."""
    text = read_text(path, advice="in Excel, save as 'CSV UTF-8'")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = list(enumerate(reader, start=1))
    except csv.Error as exc:
        raise InvalidFile(f"{path.name} line {reader.line_num}: not CSV ({exc})") from exc
    return faq_rows_to_chunks(rows, path=path, tenant=tenant, source=source or path.name)


def load_faq_xlsx(path: Path, *, tenant: str = "default", source: str | None = None) -> list[Chunk]:
    """FAQ entries from the first worksheet of an Excel workbook.

    Formulas count by the value Excel last saved for them. Other worksheets are left alone: a
    workbook often carries an instructions or change-log sheet next to the FAQ.
    """
    # Imported here: openpyxl takes a noticeable share of a cold start that may never need it.
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    # openpyxl reports a damaged or mislabelled file with whichever error its zip or XML layer
    # hit; every one of them means the same thing here.
    except Exception as exc:
        raise InvalidFile(f"{path.name}: not a readable XLSX workbook ({exc})") from exc
    try:
        sheet = workbook.worksheets[0]
        rows = list(enumerate(sheet.iter_rows(min_row=1, values_only=True), start=1))
    finally:
        workbook.close()
    return faq_rows_to_chunks(rows, path=path, tenant=tenant, source=source or path.name)


def faq_rows_to_chunks(
    rows: Iterable[tuple[int, Sequence[object]]], *, path: Path, tenant: str, source: str
) -> list[Chunk]:
    """FAQ entries from numbered rows of cells, the first non-empty row being the header."""
    header: list[str] = []
    columns: dict[int, str] = {}
    chunks: list[Chunk] = []
    seen: dict[str, int] = {}
    for number, raw in rows:
        cells = [_cell_text(value) for value in raw]
        if not any(cells):
            continue
        if not header:
            header, columns = cells, _header(cells, path=path, number=number)
            continue
        where = f"{path.name} row {number}"
        stray = [
            i + 1 for i, cell in enumerate(cells) if cell and (i >= len(header) or not header[i])
        ]
        if stray:
            raise InvalidFile(
                f"{where}: a value in column {stray[0]}, which has no header"
                " (quote a cell that contains a comma)"
            )
        entry = {column: cells[i] if i < len(cells) else "" for i, column in columns.items()}
        chunk = _entry_chunk(entry, where=where, tenant=tenant, source=source)
        if chunk.id in seen:
            raise InvalidFile(f"{where}: duplicate id {chunk.id!r} (first in row {seen[chunk.id]})")
        seen[chunk.id] = number
        chunks.append(chunk)
    return chunks


def faq_id(source: str, question: str) -> str:
    """An id that stays the same for as long as the file's name and the question do.

    Row numbers would shift when a row is inserted above, re-embedding everything below it.
    """
    normalized = " ".join(question.split())
    digest = hashlib.sha256(f"{source}\n{normalized}".encode()).hexdigest()
    return f"{source}#faq-{digest[:12]}"


def _header(cells: list[str], *, path: Path, number: int) -> dict[int, str]:
    """Column position → field, for the named columns this loader knows."""
    columns: dict[int, str] = {}
    for position, cell in enumerate(cells):
        column = _COLUMN_OF.get(re.sub(r"[\s_-]+", "_", cell.strip().lower()))
        if column is None:
            continue
        if column in columns.values():
            raise InvalidFile(f"{path.name} row {number}: two columns hold the {column}")
        columns[position] = column
    missing = [column for column in REQUIRED_COLUMNS if column not in columns.values()]
    if missing:
        accepted = "; ".join(f"{column}: {', '.join(COLUMNS[column])}" for column in missing)
        raise InvalidFile(
            f"{path.name} row {number}: the header {cells} lacks a required column ({accepted})"
        )
    return columns


def _entry_chunk(entry: dict[str, str], *, where: str, tenant: str, source: str) -> Chunk:
    question, answer = entry["question"], entry["answer"]
    if not question or not answer:
        raise InvalidFile(f"{where}: an FAQ entry needs a question and an answer")
    similar = [q.strip() for q in _SIMILAR_SEPARATOR.split(entry.get("similar", ""))]
    # The standard question first, each wording once: a repeated key would count twice in search.
    questions = tuple(dict.fromkeys(q for q in (question, *similar) if q))
    try:
        lang = declared_language(entry.get("lang")) or detect_language(question + answer)
    except ValueError as exc:
        raise InvalidFile(f"{where}: {exc}") from exc
    # A spreadsheet numbers its rows 1, 2, 3…, and so does the next one: its ids are its own.
    given = entry.get("id")
    return Chunk(
        id=f"{source}#{given}" if given else faq_id(source, question),
        kind="faq",
        lang=lang,
        title=question,
        text=answer,
        keys=questions,
        category=entry.get("category", ""),
        source=source,
        tenant=tenant,
    )


def _cell_text(value: object) -> str:
    """A cell as text; a whole number typed into a spreadsheet (an id, say) loses its `.0`."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
