"""Language detection and tokenization for Chinese, English and the two mixed."""

from __future__ import annotations

import re
from typing import Literal

Language = Literal["zh", "en"]

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RUN = re.compile(f"[{_CJK}]+")
_TOKEN = re.compile(f"[{_CJK}]+|[a-z0-9]+(?:'[a-z]+)?")
_LATIN_WORD = re.compile(r"[A-Za-z]+")

# English function words carry no topic; dropping them keeps BM25 from matching on "the" and "my".
_EN_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "i'm",
        "if",
        "in",
        "is",
        "it",
        "it's",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "please",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)


def detect_language(text: str) -> Language:
    """Chinese when Chinese characters carry the message, English otherwise.

    A mixed message such as "我的order什么时候到" counts as Chinese: customers who mix in
    English words (order, iPhone, SKU) still expect a Chinese answer.
    """
    cjk = sum(len(run) for run in _CJK_RUN.findall(text))
    latin_words = len(_LATIN_WORD.findall(text))
    if cjk == 0:
        return "en"
    # Each Chinese character is roughly half a word's worth of meaning.
    return "zh" if cjk >= latin_words else "en"


def tokenize(text: str) -> list[str]:
    """Lexical tokens for BM25: lowercase English words and overlapping Chinese bigrams.

    Chinese has no spaces; bigrams are the standard segmentation-free unit and match the
    OpenSearch `cjk_bigram` behaviour. A lone Chinese character stays a unigram.
    """
    tokens: list[str] = []
    for match in _TOKEN.findall(text.lower()):
        if _CJK_RUN.fullmatch(match):
            if len(match) == 1:
                tokens.append(match)
            else:
                tokens.extend(match[i : i + 2] for i in range(len(match) - 1))
        elif match not in _EN_STOPWORDS:
            tokens.append(match)
    return tokens
