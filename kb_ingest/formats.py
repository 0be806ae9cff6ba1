"""What every loader shares: its two errors, how it reads text, how a file declares its language."""

from __future__ import annotations

from pathlib import Path

from kefu.text import Language


class UnsupportedFile(ValueError):
    """The file's format is not one the knowledge base reads."""


class InvalidFile(ValueError):
    """The file's format is known but its content cannot be parsed."""


def read_text(path: Path, *, advice: str = "") -> str:
    """The file as UTF-8 text, with or without the BOM that Excel and Notepad write.

    `advice` tells the file's owner how to save it as UTF-8 from the tool that wrote it.
    """
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        how = f" ({advice})" if advice else ""
        raise InvalidFile(f"{path.name}: not UTF-8 text{how} ({exc})") from exc


def declared_language(value: object) -> Language | None:
    """`zh`, `zh-CN`, `zh_Hans`, `EN-us` … as the knowledge base's language; None when unset.

    Files declare languages as BCP 47 tags or locale names; only the primary subtag matters
    because retrieval filters by `zh` or `en`. A language the service does not answer in is
    refused rather than guessed at.
    """
    text = str(value or "").strip()
    if not text:
        return None
    primary = text.replace("_", "-").split("-", 1)[0].lower()
    if primary == "zh":
        return "zh"
    if primary == "en":
        return "en"
    raise ValueError(f"language {text!r} is neither zh nor en")
