"""The FAQ head: a softmax classifier over question embeddings, trained per tenant at ingest.

Nearest-example retrieval treats every stored question alike; the head learns which directions
of the embedding space tell one FAQ entry from its neighbours (multinomial logistic regression,
one class per entry, trained on the entries' standard and similar questions). On the public
intent datasets it ranks the right entry first more often than the nearest-example blend, and
its probability separates questions the KB does not cover better than a similarity does
(`python -m kb_ingest.evaluate --datasets ../shared/datasets` measures both).

The retriever re-ranks the index's FAQ candidates by the head's logits plus their similarity
(relative to each entry's spread) and BM25 score, so the index's tenant, language and category
filters still decide what may be answered; the decision to answer reads the head's own
probability. Training needs only NumPy; it is deterministic (zero start, Adam: full-batch, or
seeded minibatches for a large KB), so the same KB gives the same head. Stored, the weights
are float16: half the bytes, and logit errors far below what the thresholds resolve.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from kefu.ports import Vectors

# Unit vectors have small coordinates; scaling them lets a lightly regularised head reach
# confident logits in few steps. Chosen with the other settings on the datasets' dev splits.
SCALE = 5.0
L2 = 1e-4
STEPS = 400
LEARNING_RATE = 0.05
# How much the candidates' similarity adds to the head's logits at search time; chosen on the
# sample KB's dev set and the datasets' dev splits (the head alone, 0, ranks worse on the first).
SIMILARITY_WEIGHT = 40.0
# The similarity is taken relative to how close an entry's own questions are to one another
# (`FaqHead.spread`, this share of it): a broad entry ("chat", "other") is asked in ways far
# from each other, so a question of it is less similar to its questions than a question of a
# narrow entry is to that entry's; without this the similarity term favours narrow entries.
# And each candidate's BM25 score relative to the search's best (`SearchHit.lexical`, Chinese
# bigrams and English words) adds this many logits. Both chosen on the dev sets (the datasets'
# with tuned and bundled e5, the sample KB's); the test figures are in the README (Retrieval
# quality).
SPREAD_SHARE = 0.4
LEXICAL_LOGITS = 2.0
# Full-softmax training costs questions x entries per step (about 3.5 s for the sample KB's
# 3,900 questions x 242 entries on 2 cores). Above this budget each question is trained against
# its own entry and the entries whose question centroids are nearest it, as the head is used
# (on the index's nearest candidates), in minibatches: on the datasets, retrieval's hit@1 is
# the full softmax's (`python -m kb_ingest.evaluate --datasets ../shared/datasets
# --tune-encoder --nearest-training`), and so it is on the bilingual sample KB (`--sample
# --nearest-training`), with the nearest entries chosen within the question's language.
MAX_TRAINING_CELLS = 4_000_000
NEAREST_ENTRIES = 32
# Trained on the nearest entries, each entry's weights see far fewer questions' gradients per
# step than in the full softmax (where every question has every entry as a candidate), so the
# same L2 holds them back more and the head's own probabilities come out lower: with L2 (at
# 09ff846) the built-in head threshold, calibrated on full-softmax heads, left 82.1 % of the
# sample's covered questions answered right against 94.3 % (README). Chosen on the sample's dev
# set with the built-in thresholds (mean of answered right and OOS recall: 72.5 % at 1e-4,
# 78.5 % at 3e-5, 82.5 % at 1e-5 and below; the full softmax 85.6 %).
NEAREST_L2 = 1e-5
BATCH = 512
BATCH_STEPS = 1000
# Choosing each question's nearest entries compares it with every entry once: above this many
# questions x entries no head is trained (the KB is ranked by similarity alone).
MAX_NEAREST_CELLS = 400_000_000
_FORMAT = 1
# Where a stored head keeps its spread. Heads stored before the spread was the pairwise measure
# kept another one under "spread": such a head is read without it (no correction) until the
# next ingest (in AWS, the deployment's head upgrade) retrains it.
_SPREAD = "spread_pairs"
# Where a stored head says how it was trained (`recipes()`): a head trained with other settings
# than this release's is retrained like one without the spread.
_RECIPE = "recipe"
# What reading a stored head that cannot be read raises (another format, a damaged document).
UNREADABLE = (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile)


class Ranked(NamedTuple):
    """What `FaqHead.rank` gives for each candidate: the ranking (a softmax), the head's own
    probability, and the fit (the similarity relative to the entry's spread)."""

    order: dict[str, float]
    probability: dict[str, float]
    fit: dict[str, float]


@dataclass(frozen=True, eq=False)
class FaqHead:
    """Class `k` is the FAQ entry `ids[k]`; logits are `SCALE * x @ weights + bias`.
    `spread[k]` is how alike the entry's questions are (`spread()`; None in a head stored
    without it or with an earlier measure of it: no correction, the fit is the similarity)."""

    ids: tuple[str, ...]
    weights: np.ndarray  # (dim, classes) float32
    bias: np.ndarray  # (classes,) float32
    spread: np.ndarray | None = None  # (classes,) float32
    recipe: str = ""  # how it was trained (`recipes()`); "" when unknown

    def probabilities(self, vector: Vectors, among: Sequence[str]) -> dict[str, float] | None:
        """The head's own probability of each entry of `among` being what the question asks
        for, the softmax taken over `among` alone (the candidates the index's filters let
        through: an entry's twin in another language takes nothing from it); None when the
        head does not know one of them (the KB changed since it was trained)."""
        found = self._logits(vector, among)
        return None if found is None else dict(zip(among, _softmax(found[1]), strict=True))

    def rank(
        self,
        vector: Vectors,
        among: Sequence[str],
        similarity: Sequence[float],
        lexical: Sequence[float] | None = None,
    ) -> Ranked | None:
        """What the candidates are ordered by, `probabilities` (what the decision to answer
        reads) and each candidate's fit, from one product; None as there.

        The order adds to the head's logits `SIMILARITY_WEIGHT` times each candidate's
        similarity, taken relative to `SPREAD_SHARE` of the entry's spread (a product of the
        head's and the nearest-example view, each right where the other errs), and
        `LEXICAL_LOGITS` times its relative BM25 score. The fit is the similarity taken
        relative to the whole spread, on the similarity's scale: the similarity minus how much
        more alike the entry's own questions are than a typical entry's."""
        found = self._logits(vector, among)
        if found is None:
            return None
        at, logits = found
        given = [float(value) for value in similarity]
        similar = np.asarray(given, dtype=np.float32)
        fit: Sequence[float] = given
        if self.spread is not None:
            fit = (similar - self._excess[at]).tolist()
            similar = (similar - SPREAD_SHARE * self.spread[at]).astype(np.float32)
        combined = logits + SIMILARITY_WEIGHT * similar
        if lexical is not None:
            combined = combined + LEXICAL_LOGITS * np.asarray(lexical, dtype=np.float32)
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
        takes off the similarity); read once per head, not per question."""
        assert self.spread is not None
        return (self.spread - self.spread.mean()).astype(np.float32)

    @cached_property
    def _column(self) -> dict[str, int]:
        return {entry: k for k, entry in enumerate(self.ids)}

    @property
    def dim(self) -> int:
        return int(self.weights.shape[0])

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        arrays: dict[str, np.ndarray] = {
            "format": np.array(_FORMAT),
            "ids": np.array(self.ids, dtype=np.str_),
            "weights": self.weights.astype(np.float16),
            "bias": self.bias.astype(np.float32),
        }
        if self.spread is not None:  # a head read without it is used without the correction
            arrays[_SPREAD] = self.spread.astype(np.float32)
        if self.recipe:
            arrays[_RECIPE] = np.array(self.recipe, dtype=np.str_)
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, body: bytes) -> FaqHead:
        with np.load(io.BytesIO(body), allow_pickle=False) as stored:
            if int(stored["format"]) != _FORMAT:
                raise ValueError(f"FAQ head format {int(stored['format'])} is not {_FORMAT}")
            return cls(
                ids=tuple(str(i) for i in stored["ids"].tolist()),
                weights=stored["weights"].astype(np.float32),
                bias=stored["bias"].astype(np.float32),
                spread=stored[_SPREAD].astype(np.float32) if _SPREAD in stored else None,
                recipe=str(stored[_RECIPE]) if _RECIPE in stored else "",
            )


def outdated(body: bytes | None) -> bool:
    """Whether a stored head must be trained again although the KB has not changed: there is
    none, it cannot be read, it was stored before the spread it keeps was measured as it is now
    (`train` always measures it), or it was trained with other settings than this release's
    (`recipes()`; a head that does not say is taken as trained otherwise)."""
    if body is None:
        return True
    try:  # the directory and two small arrays: the weights are not decompressed
        with np.load(io.BytesIO(body), allow_pickle=False) as stored:
            if int(stored["format"]) != _FORMAT or _SPREAD not in stored:
                return True
            return _RECIPE not in stored or str(stored[_RECIPE]) not in recipes().values()
    except UNREADABLE:
        return True


def recipes() -> dict[str, str]:
    """How this release trains a head, by training mode, as a stored head records it."""
    return {
        "full": f"full softmax; scale {SCALE}, L2 {L2}, {STEPS} steps, rate {LEARNING_RATE}",
        "nearest": f"nearest {NEAREST_ENTRIES} of its language; scale {SCALE}, L2 {NEAREST_L2}, "
        f"{BATCH_STEPS} steps of {BATCH}, rate {LEARNING_RATE}",
    }


def _softmax(logits: np.ndarray) -> list[float]:
    weights = np.exp(logits - logits.max())
    return (weights / weights.sum()).tolist()


def training_cells(questions: Mapping[str, Vectors]) -> int:
    """What full-softmax training costs per step: questions times entries."""
    return sum(len(rows) for rows in questions.values()) * len(questions)


def train(
    questions: Mapping[str, Vectors], languages: Mapping[str, str] | None = None
) -> FaqHead | None:
    """A head over these entries (id -> its question vectors, one row each); None for fewer
    than two entries, where there is nothing to tell apart, and for a KB over
    `MAX_NEAREST_CELLS`, which is then ranked by similarity alone.

    With `languages` (id -> the entry's language), a KB over `MAX_TRAINING_CELLS` trains each
    question against the nearest entries of its own entry's language, as it is asked (the
    index's language filter keeps other languages out of the candidates): otherwise a
    multilingual encoder makes an entry's twin in the other language its nearest, and the
    head learns to tell twins apart instead of neighbours. The full softmax keeps every
    entry (measured: no better within the language)."""
    ids = sorted(entry for entry, rows in questions.items() if len(rows))
    cells = training_cells(questions)
    if len(ids) < 2 or cells > MAX_NEAREST_CELLS:
        return None
    x = SCALE * np.vstack([np.asarray(questions[i], dtype=np.float32) for i in ids])
    labels = np.concatenate([np.full(len(questions[i]), k) for k, i in enumerate(ids)])
    if cells > MAX_TRAINING_CELLS:
        names = [(languages or {}).get(i, "") for i in ids]
        groups = np.unique(names, return_inverse=True)[1].astype(np.int64)
        weights, bias = _train_on_nearest(x, labels, groups)
        return FaqHead(
            ids=tuple(ids),
            weights=weights,
            bias=bias,
            spread=spread(questions, ids),
            recipe=recipes()["nearest"],
        )
    n, classes = len(x), len(ids)
    targets = np.zeros((n, classes), dtype=np.float32)
    targets[np.arange(n), labels] = 1.0
    weights = np.zeros((x.shape[1], classes), dtype=np.float32)
    bias = np.zeros(classes, dtype=np.float32)
    moments = [np.zeros_like(weights), np.zeros_like(weights)]
    bias_moments = [np.zeros_like(bias), np.zeros_like(bias)]
    everything = slice(None)
    for step in range(1, STEPS + 1):
        logits = x @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        error = (p - targets) / n
        _adam(weights, moments, everything, x.T @ error + L2 * weights, step)
        _adam(bias, bias_moments, everything, error.sum(axis=0), step)
    return FaqHead(
        ids=tuple(ids),
        weights=weights.astype(np.float32),
        bias=bias.astype(np.float32),
        spread=spread(questions, ids),
        recipe=recipes()["full"],
    )


def spread(questions: Mapping[str, Vectors], ids: Sequence[str]) -> np.ndarray:
    """How alike each entry's questions are: the square root of the mean similarity of two of
    its questions, which is what the similarity of one of them to the centroid of the others
    tends to as the entry has more of them (measured on that similarity directly, an entry of
    few questions would look broader than it is). Unknown, and so the mean of the known ones
    (neither favoured nor held back; 0 for all when none is known), for an entry of one
    question, which has no others, and for one whose questions are no more alike than two
    questions of different entries are on average: the embedder sees nothing in common between
    them, and the fit must not take any question as near such an entry."""
    out = np.zeros(len(ids), dtype=np.float32)
    dim = max((np.shape(questions[entry])[-1] for entry in ids), default=0)
    sums = np.zeros((len(ids), dim))
    counts = np.zeros(len(ids))
    selves = np.zeros(len(ids))
    for k, entry in enumerate(ids):  # one entry's rows at a time in float64, not the whole KB
        rows = np.asarray(questions[entry], dtype=np.float64).reshape(-1, dim)
        sums[k], counts[k], selves[k] = rows.sum(axis=0), len(rows), float((rows * rows).sum())
    squares = (sums * sums).sum(axis=1)  # each entry's similarities summed over its pairs
    own = squares - selves  # less each question with itself
    total = sums.sum(axis=0)
    cross_pairs = float(counts.sum() ** 2 - (counts**2).sum())
    background = (float(total @ total) - squares.sum()) / cross_pairs if cross_pairs else 0.0
    known = np.zeros(len(ids), dtype=bool)
    for k, n in enumerate(counts):
        if n < 2:
            continue
        pairs = own[k] / (n * (n - 1))
        if pairs > max(background, 0.0):
            out[k], known[k] = np.sqrt(pairs), True
    if known.any():
        out[~known] = out[known].mean()
    return out


def _train_on_nearest(
    x: np.ndarray, labels: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax over each question's own entry and its nearest others of the same group (its
    language), minibatch Adam (updating only the entries a batch touches); `labels` come in
    blocks, one per entry, and `groups` gives each entry's group."""
    n, dim = x.shape
    classes = len(groups)
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    centroids = np.add.reduceat(x, starts, axis=0)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    k = min(NEAREST_ENTRIES, classes)
    nearest = np.empty((n, k), dtype=np.int64)
    # A question's candidates can be fewer than k in a small group: the rest are masked out.
    allowed = np.zeros((n, k), dtype=np.float32)
    for start in range(0, n, 2048):
        block = slice(start, start + 2048)
        similarity = x[block] @ centroids.T
        similarity[groups[labels[block]][:, None] != groups[None, :]] = -np.inf
        similarity[np.arange(len(similarity)), labels[block]] = np.inf  # its own entry first
        chosen = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        nearest[block] = chosen
        picked = np.take_along_axis(similarity, chosen, axis=1)
        allowed[block] = np.where(np.isneginf(picked), -np.inf, 0.0)
    own = np.argmax(nearest == labels[:, None], axis=1)
    rows_by_entry = np.zeros((classes, dim), dtype=np.float32)  # the weights, one row each
    bias = np.zeros(classes, dtype=np.float32)
    moments = [np.zeros_like(rows_by_entry), np.zeros_like(rows_by_entry)]
    bias_moments = [np.zeros_like(bias), np.zeros_like(bias)]
    rng = np.random.default_rng(0)
    order, position = rng.permutation(n), 0
    for step in range(1, BATCH_STEPS + 1):
        if position + BATCH > n:
            order, position = rng.permutation(n), 0
        batch = order[position : position + BATCH]
        position += BATCH
        entries, xb = nearest[batch], x[batch]
        logits = np.matmul(rows_by_entry[entries], xb[:, :, None])[:, :, 0] + bias[entries]
        logits += allowed[batch]
        logits -= logits.max(axis=1, keepdims=True)
        error = np.exp(logits)
        error /= error.sum(axis=1, keepdims=True)
        error[np.arange(len(batch)), own[batch]] -= 1.0
        error /= len(batch)
        # The gradient of the touched entries: a (touched x batch) matrix times the batch. A
        # masked slot (a small language) names its question's own entry instead, with no error
        # of its own, so that no entry outside the batch's candidates takes an Adam step.
        entries = np.where(np.isneginf(allowed[batch]), labels[batch][:, None], entries)
        touched, which = np.unique(entries.ravel(), return_inverse=True)
        by_entry = np.zeros((len(touched), len(batch)), dtype=np.float32)
        np.add.at(by_entry, (which, np.repeat(np.arange(len(batch)), k)), error.ravel())
        grad = by_entry @ xb + NEAREST_L2 * rows_by_entry[touched]
        _adam(rows_by_entry, moments, touched, grad, step)
        _adam(bias, bias_moments, touched, by_entry.sum(axis=1), step)
    return rows_by_entry.T.copy(), bias


def _adam(
    param: np.ndarray,
    moments: list[np.ndarray],
    rows: np.ndarray | slice,
    grad: np.ndarray,
    step: int,
) -> None:
    """Adam's update (Kingma & Ba, 2015, the usual constants) of some rows of `param`, in
    place; the other rows keep their moments."""
    first, second = moments
    first[rows] = 0.9 * first[rows] + 0.1 * grad
    second[rows] = 0.999 * second[rows] + 0.001 * grad * grad
    unbiased = first[rows] / (1 - 0.9**step)
    scale = np.sqrt(second[rows] / (1 - 0.999**step)) + 1e-8
    param[rows] -= LEARNING_RATE * unbiased / scale
