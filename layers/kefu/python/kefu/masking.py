"""Masking of personal data by pattern: contact details and identity numbers in free text.

A pattern finds what has a shape (phone numbers, e-mail addresses, Chinese resident identity
numbers, bank card numbers); it cannot find a name or a street address, which need review or a
named-entity model. Each match is replaced by a placeholder naming its kind, in the text's
language, so that what remains still reads as a sentence.
"""

from __future__ import annotations

import re

# Most specific shapes first: an 18-digit identity number is not a card number, and a mobile
# number with its country code is not a card number either.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("email", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")),
    ("id_card", re.compile(r"(?<!\d)\d{17}[\dXx](?!\d)")),
    ("phone", re.compile(r"(?<![\d+])(?:\+?86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?![\d-])")),
    ("phone", re.compile(r"(?<!\d)0\d{2,3}-?\d{7,8}(?!\d)")),
    ("bank_card", re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")),
)
_PLACEHOLDERS = {
    "email": ("[邮箱]", "[email]"),
    "id_card": ("[身份证号]", "[ID number]"),
    "bank_card": ("[银行卡号]", "[card number]"),
    "phone": ("[电话]", "[phone]"),
}


def mask_personal_data(text: str, *, language: str = "zh") -> str:
    """`text` with every phone number, e-mail, identity and card number replaced."""
    for kind, pattern in _PATTERNS:
        placeholder = _PLACEHOLDERS[kind][0 if language == "zh" else 1]
        text = pattern.sub(placeholder, text)
    return text
