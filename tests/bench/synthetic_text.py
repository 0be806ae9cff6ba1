"""Synthetic knowledge-base text shared by the benchmarks.

Text drawn word by word from a Zipf distribution over a vocabulary the size of a real KB's, so
that BM25 sees common and rare terms as it would in practice.
"""

from __future__ import annotations

import random

import numpy as np

_VOCABULARY = 20_000
_ZIPF = np.random.default_rng(3).zipf(1.2, 1_000_000)
_ZIPF = _ZIPF[_ZIPF <= _VOCABULARY]
_COMMON_HANZI = [chr(0x4E00 + i) for i in range(0, 20_000, 7)]


def sentence(rng: random.Random, lang: str) -> str:
    """Nine words (nine characters in Chinese) ending in a question mark."""
    ranks = [int(_ZIPF[rng.randrange(len(_ZIPF))]) for _ in range(9)]
    if lang == "zh":
        return "".join(_COMMON_HANZI[r % len(_COMMON_HANZI)] for r in ranks) + "？"
    return " ".join(f"w{r}" for r in ranks) + "?"
