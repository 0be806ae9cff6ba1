"""Knowledge-base ingestion: load, chunk, embed and index what the enterprise knows."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kefu.text import Language

SAMPLE_KB = Path(__file__).parent / "sample_kb"
# What the local stack indexes: FAQ entries, policy documents and out-of-scope examples.
SAMPLE_KB_PATHS = (SAMPLE_KB / "faq", SAMPLE_KB / "docs", SAMPLE_KB / "scope")


def faq_questions(paths: Iterable[Path] = SAMPLE_KB_PATHS) -> list[tuple[str, Language]]:
    """Every FAQ question of the KB at `paths` (each entry's standard question and its
    paraphrases), with the entry's language, in file order: what the cache benchmark and
    `make load` ask. Out-of-scope examples are not FAQ questions."""
    from kb_ingest.loaders import load
    from kb_ingest.pipeline import expand

    return [
        (question, chunk.lang)
        for file, source in expand(paths)
        for chunk in load(file, source=source)
        if chunk.kind == "faq"
        for question in chunk.keys
    ]
