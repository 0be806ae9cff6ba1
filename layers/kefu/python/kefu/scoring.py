"""How a knowledge index scores a chunk: one blend, which every index adapter computes.

An index measures a few views of each chunk against the question (its closest key, the centroid
of its questions, its content, its BM25 score) and hands them here, so the same chunk gets the
same `dense` from the embedded index and from OpenSearch, and the thresholds calibrated on one
hold for the other. (Their BM25 scores differ: SQLite FTS5 and Lucene analyse text otherwise.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

    Scores = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Blend:
    """An FAQ entry's dense score blends its closest question (the nearest neighbour), the
    centroid of its questions (a prototype of everything it is asked as) and its content: it
    ranks entries better than any one view on the sample KB's dev set. A passage and an
    out-of-scope entry are scored by their closest key alone. `lexical_weight` is the share of
    the relative BM25 score in the fused score that orders the hits (0: on the sample's dev set
    fusing lowered accuracy; the FAQ head still ranks with BM25)."""

    centroid_weight: float = 1.0
    content_weight: float = 0.5
    lexical_weight: float = 0.0

    def dense(
        self,
        *,
        nearest: npt.ArrayLike,
        centroid: npt.ArrayLike,
        content: npt.ArrayLike,
        is_faq: npt.ArrayLike,
    ) -> Scores:
        """Each chunk's semantic similarity, from its views (one value per chunk)."""
        near = np.asarray(nearest, dtype=np.float32)
        blend = (
            near
            + self.centroid_weight * np.asarray(centroid, dtype=np.float32)
            + self.content_weight * np.asarray(content, dtype=np.float32)
        ) / (1.0 + self.centroid_weight + self.content_weight)
        return np.where(np.asarray(is_faq, dtype=bool), blend, near).astype(np.float32)

    def fused(self, dense: npt.ArrayLike, lexical: npt.ArrayLike) -> Scores:
        """What the hits are ordered by."""
        return (
            np.asarray(dense, dtype=np.float32)
            + self.lexical_weight * np.asarray(lexical, dtype=np.float32)
        ).astype(np.float32)


def relative_lexical(bm25: npt.ArrayLike) -> Scores:
    """Each chunk's BM25 score relative to the best of the search (0 to 1; all 0 when nothing
    matched): raw BM25 is not comparable across questions, a share of the best is."""
    scores = np.asarray(bm25, dtype=np.float64)
    best = float(scores.max(initial=0.0))
    if best <= 0.0:
        return np.zeros(scores.shape, dtype=np.float32)
    return (scores / best).astype(np.float32)
