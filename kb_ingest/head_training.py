"""Training the FAQ head (`kefu.head`) on a tenant's FAQ questions; the ingest side only.

Multinomial logistic regression, one class per entry, trained on each entry's standard and
similar questions. NumPy only, and deterministic (zero start, Adam: full-batch, or seeded
minibatches for a large KB), so the same KB gives the same head.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kefu.head import FORMAT, RECIPE_KEY, SCALE, SPREAD_KEY, UNREADABLE, FaqHead

if TYPE_CHECKING:
    from kefu.ports import Vectors


@dataclass(frozen=True, slots=True)
class Training:
    """How a head is trained. Full-softmax training costs questions x entries per step (about
    3.5 s for the sample KB on 2 cores); above `max_full_cells` each question is trained
    against its own entry and the `nearest_entries` of its language whose question centroids
    are nearest it, as the head is used (on the index's nearest candidates), in minibatches;
    above `max_nearest_cells` no head is trained and the KB is ranked by similarity. Trained
    on the nearest entries, an entry's weights see far fewer gradients per step, so the same
    L2 would hold them back more: `nearest_l2` is their own. Chosen on dev splits."""

    l2: float = 1e-4
    steps: int = 400
    learning_rate: float = 0.05
    max_full_cells: int = 4_000_000
    nearest_entries: int = 32
    nearest_l2: float = 1e-5
    batch: int = 512
    batch_steps: int = 1000
    max_nearest_cells: int = 400_000_000

    def recipes(self) -> dict[str, str]:
        """How these settings train a head, by mode, as a stored head records it: a head
        trained otherwise is outdated."""
        return {
            "full": f"full softmax; scale {SCALE}, L2 {self.l2}, {self.steps} steps, "
            f"rate {self.learning_rate}",
            "nearest": f"nearest {self.nearest_entries} of its language; scale {SCALE}, "
            f"L2 {self.nearest_l2}, {self.batch_steps} steps of {self.batch}, "
            f"rate {self.learning_rate}",
        }

    def on_nearest(self, questions: Mapping[str, Vectors]) -> bool:
        """Whether a KB of these questions is trained on each question's nearest entries."""
        return training_cells(questions) > self.max_full_cells


def training_cells(questions: Mapping[str, Vectors]) -> int:
    """What full-softmax training costs per step: questions times entries."""
    return sum(len(rows) for rows in questions.values()) * len(questions)


def outdated(body: bytes | None, training: Training = Training()) -> bool:
    """Whether a stored head must be trained again although the KB has not changed: there is
    none, it cannot be read, it has no spread (an earlier release's), or it was trained
    otherwise than `training` trains (one that does not say is taken as trained otherwise)."""
    if body is None:
        return True
    try:  # the directory and two small arrays: the weights are not decompressed
        with np.load(io.BytesIO(body), allow_pickle=False) as stored:
            if int(stored["format"]) != FORMAT or SPREAD_KEY not in stored:
                return True
            recipe = str(stored[RECIPE_KEY]) if RECIPE_KEY in stored else None
            return recipe not in training.recipes().values()
    except UNREADABLE:
        return True


def train(
    questions: Mapping[str, Vectors],
    languages: Mapping[str, str] | None = None,
    training: Training = Training(),
) -> FaqHead | None:
    """A head over these entries (id -> its question vectors, one row each); None for fewer
    than two entries, where there is nothing to tell apart, and for a KB over
    `max_nearest_cells`.

    With `languages` (id -> the entry's language), a KB over `max_full_cells` trains each
    question against the nearest entries of its own entry's language, as it is asked (the
    index's language filter keeps other languages out of the candidates): otherwise a
    multilingual encoder makes an entry's twin in the other language its nearest, and the
    head learns to tell twins apart instead of neighbours."""
    ids = sorted(entry for entry, rows in questions.items() if len(rows))
    cells = training_cells(questions)
    if len(ids) < 2 or cells > training.max_nearest_cells:
        return None
    x = SCALE * np.vstack([np.asarray(questions[i], dtype=np.float32) for i in ids])
    labels = np.concatenate([np.full(len(questions[i]), k) for k, i in enumerate(ids)])
    if cells > training.max_full_cells:
        names = [(languages or {}).get(i, "") for i in ids]
        groups = np.unique(names, return_inverse=True)[1].astype(np.int64)
        weights, bias = _train_on_nearest(x, labels, groups, training)
        mode = "nearest"
    else:
        weights, bias = _train_full(x, labels, len(ids), training)
        mode = "full"
    return FaqHead(
        ids=tuple(ids),
        weights=weights,
        bias=bias,
        spread=spread(questions, ids),
        recipe=training.recipes()[mode],
    )


def _train_full(
    x: np.ndarray, labels: np.ndarray, classes: int, training: Training
) -> tuple[np.ndarray, np.ndarray]:
    """Full-batch softmax over every entry."""
    n = len(x)
    targets = np.zeros((n, classes), dtype=np.float32)
    targets[np.arange(n), labels] = 1.0
    weights = np.zeros((x.shape[1], classes), dtype=np.float32)
    bias = np.zeros(classes, dtype=np.float32)
    moments = [np.zeros_like(weights), np.zeros_like(weights)]
    bias_moments = [np.zeros_like(bias), np.zeros_like(bias)]
    everything = slice(None)
    rate = training.learning_rate
    for step in range(1, training.steps + 1):
        logits = x @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        error = (p - targets) / n
        _adam(weights, moments, everything, x.T @ error + training.l2 * weights, step, rate)
        _adam(bias, bias_moments, everything, error.sum(axis=0), step, rate)
    return weights.astype(np.float32), bias.astype(np.float32)


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
    x: np.ndarray, labels: np.ndarray, groups: np.ndarray, training: Training
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax over each question's own entry and its nearest others of the same group (its
    language), minibatch Adam (updating only the entries a batch touches); `labels` come in
    blocks, one per entry, and `groups` gives each entry's group."""
    n, dim = x.shape
    classes = len(groups)
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    centroids = np.add.reduceat(x, starts, axis=0)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    k = min(training.nearest_entries, classes)
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
    size, rate = training.batch, training.learning_rate
    for step in range(1, training.batch_steps + 1):
        if position + size > n:
            order, position = rng.permutation(n), 0
        batch = order[position : position + size]
        position += size
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
        grad = by_entry @ xb + training.nearest_l2 * rows_by_entry[touched]
        _adam(rows_by_entry, moments, touched, grad, step, rate)
        _adam(bias, bias_moments, touched, by_entry.sum(axis=1), step, rate)
    return rows_by_entry.T.copy(), bias


def _adam(
    param: np.ndarray,
    moments: list[np.ndarray],
    rows: np.ndarray | slice,
    grad: np.ndarray,
    step: int,
    rate: float,
) -> None:
    """Adam's update (Kingma & Ba, 2015, the usual constants) of some rows of `param`, in
    place; the other rows keep their moments."""
    first, second = moments
    first[rows] = 0.9 * first[rows] + 0.1 * grad
    second[rows] = 0.999 * second[rows] + 0.001 * grad * grad
    unbiased = first[rows] / (1 - 0.9**step)
    scale = np.sqrt(second[rows] / (1 - 0.999**step)) + 1e-8
    param[rows] -= rate * unbiased / scale
