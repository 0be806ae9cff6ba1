"""Masking of personal data by pattern: contact details and identity numbers in free text.

A pattern finds what has a shape: e-mail addresses; phone numbers (Chinese mobiles and
landlines, North American numbers, and any number written with a `+` country code); Chinese
resident identity numbers (their GB 11643 check digit must match); bank card numbers (13 to 19
digits, whole or in groups of four, whose Luhn check digit must match). The check digits keep
dates, prices, sizes and order numbers readable. A pattern cannot find a name, a street address,
a QQ number or a WeChat id, which need review or a named-entity model. An 11-digit number that
looks like a mobile is masked even if it is an order number: masking too much is the safe side.

Each match becomes a placeholder naming its kind, in the text's language, so that what remains
still reads as a sentence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

_SEP = r"[ .\-]?"
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_ID_CARD = re.compile(r"(?<![\dA-Za-z])\d{17}[\dXx](?![\dA-Za-z])")
_CARD = re.compile(
    r"(?<![\d.\-])(?:\d{13,19}|\d{4}(?:[ \-]\d{4}){2,3}(?:[ \-]\d{1,3})?)(?![\d.\-])"
)
_PHONES = (
    # Chinese mobile, optionally with +86: 13812345678, 138 1234 5678, +86-138.1234.5678
    re.compile(rf"(?<![\d+])(?:\+?86{_SEP})?1[3-9]\d{_SEP}\d{{4}}{_SEP}\d{{4}}(?!\d)"),
    # Chinese landline: 010-12345678, (010)12345678, 021 1234 5678, 0755-8888-9999
    re.compile(r"(?<!\d)(?:\(0\d{2,3}\)\s?|0\d{2,3}[ \-])\d{3,4}[ \-]?\d{4}(?!\d)"),
    # Any number with a country code: +44 20 7946 0958, +1 415 555 0123
    re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .\-]?\(?\d{1,4}\)?){2,5}(?!\d)"),
    # North American: (415) 555-0123, 415-555-0123, 415.555.0123
    re.compile(r"(?<!\d)(?:\(\d{3}\)\s?|\d{3}[.\-])\d{3}[.\-]\d{4}(?!\d)"),
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_PLACEHOLDERS = {
    "email": ("[邮箱]", "[email]"),
    "id_card": ("[身份证号]", "[ID number]"),
    "bank_card": ("[银行卡号]", "[card number]"),
    "phone": ("[电话]", "[phone]"),
    "custom": ("[已隐藏]", "[redacted]"),
}


def _is_identity_number(text: str) -> bool:
    total = sum(int(digit) * weight for digit, weight in zip(text[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == text[17].upper()


def _passes_luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def mask_personal_data(
    text: str,
    *,
    language: str = "zh",
    keep: Callable[[str], bool] | None = None,
    extra: Sequence[re.Pattern[str]] = (),
) -> str:
    """`text` with every e-mail, identity number, card number and phone number replaced, but
    those `keep` says to keep; and whatever the deployment's own `extra` patterns match
    (`KEFU_MASK_PATTERNS`: member numbers, licence plates…), always."""
    slot = 0 if language == "zh" else 1

    def masking(
        kind: str, check: Callable[[str], bool] = lambda _: True
    ) -> Callable[[re.Match[str]], str]:
        def replace(match: re.Match[str]) -> str:
            found = match.group()
            if not check(found) or (keep is not None and keep(found)):
                return found
            return _PLACEHOLDERS[kind][slot]

        return replace

    text = _EMAIL.sub(masking("email"), text)
    text = _ID_CARD.sub(masking("id_card", _is_identity_number), text)
    text = _CARD.sub(masking("bank_card", lambda s: _passes_luhn(re.sub(r"\D", "", s))), text)
    for pattern in _PHONES:
        text = pattern.sub(masking("phone"), text)
    for pattern in extra:
        text = pattern.sub(_PLACEHOLDERS["custom"][slot], text)
    return text


_NUMBER_RUN = re.compile(r"[\d+][\d ()\-.]*\d")


def mask_unless_given(
    text: str,
    given: Sequence[str],
    *,
    language: str = "zh",
    extra: Sequence[re.Pattern[str]] = (),
) -> str:
    """`text` (an answer) with the contact details and identity numbers masked that none of
    `given` (the customer's message, the sources it was answered from) contains: an answer
    never carries such data that nobody gave it."""
    emails = {found.lower() for source in given for found in _EMAIL.findall(source)}
    numbers = {re.sub(r"\D", "", run) for source in given for run in _NUMBER_RUN.findall(source)}

    def keep(found: str) -> bool:
        if "@" in found:
            return found.lower() in emails
        digits = re.sub(r"\D", "", found)
        return any(digits and digits in number for number in numbers)

    return mask_personal_data(text, language=language, keep=keep, extra=extra)
