"""The FAQ head: a softmax classifier over question embeddings, one class per FAQ entry, trained
per tenant at ingest (`kb_ingest.head_training`) and read here to rank a question's candidates.

Nearest-example retrieval treats every stored question alike; the head learns which directions
of the embedding space tell one entry from its neighbours, and an uncovered question spreads its
probability over several of them. The retriever re-ranks the index's FAQ candidates with it, so
the index's tenant, language and category filters still decide what may be answered.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from kefu.ports import Vectors

# Logits are `SCALE * x @ weights + bias`: unit vectors have small coordinates, and scaling them
# lets a lightly regularised head reach confident logits in few steps. Part of the stored format.
SCALE = 5.0
FORMAT = 1
# Where a stored head keeps its spread (`kb_ingest.head_training.spread`) and its recipe (how
# it was trained). A head without the spread, stored by an earlier release, is not read: the
# KB is ranked by similarity until it is retrained.
SPREAD_KEY = "spread_pairs"
RECIPE_KEY = "recipe"
# What reading a stored head that cannot be read raises (another format, a damaged document).
UNREADABLE = (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile)


@dataclass(frozen=True, slots=True)
class Ranking:
    """How the retriever orders FAQ candidates with a head: the index's `candidates` best chunks
    are re-ranked by the head's logits plus `similarity_weight` times each candidate's
    similarity (less `spread_share` of its entry's spread, so broad entries are not out-ranked
    by narrow neighbours) plus `lexical_logits` times its relative BM25 score: each view is
    right where the others err. Chosen on the sample's and the datasets' dev splits."""

    candidates: int = 20
    similarity_weight: float = 40.0
    spread_share: float = 0.4
    lexical_logits: float = 2.0


class Ranked(NamedTuple):
    """For each candidate: what they are ordered by (a softmax of the combined logits), the
    head's own probability (a softmax of its logits alone: what the decision reads), and the
    fit (the similarity less how much more alike the entry's questions are than a typical
    entry's)."""

    order: dict[str, float]
    probability: dict[str, float]
    fit: dict[str, float]


@dataclass(frozen=True, eq=False)
class FaqHead:
    """Class `k` is the FAQ entry `ids[k]`; `spread[k]` is how alike its questions are;
    `recipe` says how it was trained ("" when unknown)."""

    ids: tuple[str, ...]
    weights: np.ndarray  # (dim, classes) float32
    bias: np.ndarray  # (classes,) float32
    spread: np.ndarray  # (classes,) float32
    recipe: str = ""

    def probabilities(self, vector: Vectors, among: Sequence[str]) -> dict[str, float] | None:
        """The head's own probability of each entry of `among`, the softmax taken over `among`
        alone (the candidates the index's filters let through: an entry's twin in another
        language takes nothing from it); None when the head does not know one of them (the KB
        changed since it was trained)."""
        found = self._logits(vector, among)
        return None if found is None else dict(zip(among, _softmax(found[1]), strict=True))

    def rank(
        self,
        vector: Vectors,
        among: Sequence[str],
        similarity: Sequence[float],
        lexical: Sequence[float] | None = None,
        ranking: Ranking = Ranking(),
    ) -> Ranked | None:
        """The candidates' order, own probabilities and fits, from one product; None as in
        `probabilities`."""
        found = self._logits(vector, among)
        if found is None:
            return None
        at, logits = found
        similar = np.asarray([float(value) for value in similarity], dtype=np.float32)
        fit = (similar - self._excess[at]).tolist()
        relative = (similar - ranking.spread_share * self.spread[at]).astype(np.float32)
        combined = logits + ranking.similarity_weight * relative
        if lexical is not None:
            combined = combined + ranking.lexical_logits * np.asarray(lexical, dtype=np.float32)
        return Ranked(
            order=dict(zip(among, _softmax(combined), strict=True)),
            probability=dict(zip(among, _softmax(logits), strict=True)),
            fit=dict(zip(among, fit, strict=True)),
        )

    def _logits(
        self, vector: Vectors, among: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The columns of `among` and the head's logits for them; None for an unknown entry."""
        columns = [self._column.get(entry) for entry in among]
        if not columns or any(column is None for column in columns):
            return None
        at = np.array(columns, dtype=np.int64)
        vector = np.asarray(vector, dtype=np.float32)
        return at, SCALE * vector @ self.weights[:, at] + self.bias[at]

    @cached_property
    def _excess(self) -> np.ndarray:
        """How much more alike each entry's questions are than a typical entry's (what the fit
        takes off the similarity); computed once per head, not per question."""
        return (self.spread - self.spread.mean()).astype(np.float32)

    @cached_property
    def _column(self) -> dict[str, int]:
        return {entry: k for k, entry in enumerate(self.ids)}

    @property
    def dim(self) -> int:
        return int(self.weights.shape[0])

    def to_bytes(self) -> bytes:
        """Weights as float16: half the bytes, logit errors far below what thresholds resolve."""
        buffer = io.BytesIO()
        arrays: dict[str, np.ndarray] = {
            "format": np.array(FORMAT),
            "ids": np.array(self.ids, dtype=np.str_),
            "weights": self.weights.astype(np.float16),
            "bias": self.bias.astype(np.float32),
            SPREAD_KEY: self.spread.astype(np.float32),
        }
        if self.recipe:
            arrays[RECIPE_KEY] = np.array(self.recipe, dtype=np.str_)
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, body: bytes) -> FaqHead:
        """Raises one of `UNREADABLE` for a head of another format or without the spread."""
        with np.load(io.BytesIO(body), allow_pickle=False) as stored:
            if int(stored["format"]) != FORMAT:
                raise ValueError(f"FAQ head format {int(stored['format'])} is not {FORMAT}")
            if SPREAD_KEY not in stored:
                raise ValueError("FAQ head stored without the spread by an earlier release")
            return cls(
                ids=tuple(str(i) for i in stored["ids"].tolist()),
                weights=stored["weights"].astype(np.float32),
                bias=stored["bias"].astype(np.float32),
                spread=stored[SPREAD_KEY].astype(np.float32),
                recipe=str(stored[RECIPE_KEY]) if RECIPE_KEY in stored else "",
            )


def _softmax(logits: np.ndarray) -> list[float]:
    weights = np.exp(logits - logits.max())
    return (weights / weights.sum()).tolist()
