"""multilingual-e5-small as a PyTorch module, built from (and written back to) an engine image.

The forward pass is the engine's (BERT: embeddings + LayerNorm, post-norm attention and GELU
feed-forward blocks, mean pooling, L2 normalization), in float32 over the image's dequantized
weights; tests/unit/test_tuning.py checks it against the engine. Word and position embeddings
stay frozen (most of the parameters, and shared with every language the KB does not use).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kb_ingest.tuning.image import BLOCK, MATRICES, NORMS, Image
from kb_ingest.tuning.tokenizer import Tokenizer


def fake_quantize(weight: torch.Tensor) -> torch.Tensor:
    """The weight as the engine will hold it (Q4_0, `image.quantize` in PyTorch), with the
    gradient passed straight through: training sees the 4-bit matrices it will be served with."""
    blocks = weight.reshape(-1, BLOCK)
    extreme = blocks.gather(1, blocks.abs().argmax(dim=1, keepdim=True))
    scale = extreme / -8.0  # levels come from the float32 scale, values from its float16
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    inverse = torch.where(scale == 0, torch.zeros_like(scale), 1.0 / safe)
    levels = torch.clamp(torch.floor(blocks * inverse + 8.5), 0, 15)
    quantized = ((levels - 8) * scale.half().float()).reshape(weight.shape)
    return weight + (quantized - weight).detach()


def _layer_norm(image: Image, weight: str, bias: str, eps: float) -> nn.LayerNorm:
    norm = nn.LayerNorm(image.config.hidden, eps=eps)
    norm.weight.data = torch.from_numpy(image.floats(weight))
    norm.bias.data = torch.from_numpy(image.floats(bias))
    return norm


class Block(nn.Module):
    def __init__(self, image: Image, layer: int) -> None:
        super().__init__()
        c = image.config
        shapes = {"q": (c.hidden, c.hidden), "k": (c.hidden, c.hidden), "v": (c.hidden, c.hidden)}
        shapes |= {"ao": (c.hidden, c.hidden), "fi": (c.intermediate, c.hidden)}
        shapes["fo"] = (c.hidden, c.intermediate)
        self.heads = c.heads
        self.quantized = False  # run the matrices as the engine holds them (see fake_quantize)
        self.linear = nn.ModuleDict()
        for name in MATRICES:
            rows, cols = shapes[name]
            linear = nn.Linear(cols, rows)
            linear.weight.data = torch.from_numpy(image.matrix(f"l{layer}.{name}.w", rows, cols))
            linear.bias.data = torch.from_numpy(image.floats(f"l{layer}.{name}.b"))
            self.linear[name] = linear
        self.norms = nn.ModuleDict(
            {n: _layer_norm(image, f"l{layer}.{n}.w", f"l{layer}.{n}.b", c.eps) for n in NORMS}
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        size = hidden // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, size).transpose(1, 2)

        norm = self.norms

        def lin(name: str, t: torch.Tensor) -> torch.Tensor:
            linear = self.linear[name]
            assert isinstance(linear, nn.Linear)
            weight = fake_quantize(linear.weight) if self.quantized else linear.weight
            return F.linear(t, weight, linear.bias)

        q, k, v = (split(lin(n, x)) for n in ("q", "k", "v"))
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        context = context.transpose(1, 2).reshape(batch, length, hidden)
        x = norm["aln"](x + lin("ao", context))
        return norm["oln"](x + lin("fo", F.gelu(lin("fi", x))))


class Encoder(nn.Module):
    def __init__(self, image: Image) -> None:
        super().__init__()
        c = image.config
        self.image = image
        self.tokenizer = Tokenizer(image.vocabulary)
        self.max_positions = c.max_positions
        words = image.matrix("emb.word", c.vocabulary, c.hidden)
        self.words = nn.Embedding.from_pretrained(torch.from_numpy(words), freeze=True)
        positions = image.floats("emb.pos").reshape(c.max_positions, c.hidden)
        self.positions: torch.Tensor
        self.token_type: torch.Tensor
        self.register_buffer("positions", torch.from_numpy(positions))
        self.register_buffer("token_type", torch.from_numpy(image.floats("emb.type")[: c.hidden]))
        self.norm = _layer_norm(image, "emb.ln.w", "emb.ln.b", c.eps)
        self.blocks = nn.ModuleList(Block(image, layer) for layer in range(c.layers))

    def batch(self, texts: Sequence[str], *, query: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids, padded, and which of them are real."""
        encoded = [
            self.tokenizer.encode(t, query=query, max_length=self.max_positions) for t in texts
        ]
        length = max(len(ids) for ids in encoded)
        ids = torch.full((len(encoded), length), self.tokenizer.vocabulary.pad, dtype=torch.long)
        real = torch.zeros((len(encoded), length), dtype=torch.bool)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            real[row, : len(tokens)] = True
        return ids, real

    def forward(self, ids: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        x = self.norm(self.words(ids) + self.positions[:length] + self.token_type)
        mask = torch.zeros(real.shape, dtype=x.dtype).masked_fill(~real, float("-inf"))
        for block in self.blocks:
            x = block(x, mask[:, None, None, :])
        weights = real.to(x.dtype)[..., None]
        return F.normalize((x * weights).sum(1) / weights.sum(1), dim=-1)

    def embed(self, texts: Sequence[str], *, query: bool, batch_size: int = 64) -> np.ndarray:
        parts = []
        with torch.no_grad():
            for at in range(0, len(texts), batch_size):
                parts.append(self(*self.batch(texts[at : at + batch_size], query=query)))
        return torch.cat(parts).numpy() if parts else np.zeros((0, self.image.config.hidden))

    def to_image(self, *, matrices: bool = True) -> bytes:
        """The base image with this module's transformer weights: biases and norms exactly (the
        image keeps them in float32), the matrices (unless not `matrices`) re-quantized."""
        floats: dict[str, torch.Tensor] = {"emb.ln.w": self.norm.weight, "emb.ln.b": self.norm.bias}
        weights: dict[str, torch.Tensor] = {}
        for layer, block in enumerate(self.blocks):
            assert isinstance(block, Block)
            for name in MATRICES:
                linear = block.linear[name]
                assert isinstance(linear, nn.Linear)
                weights[f"l{layer}.{name}.w"] = linear.weight
                floats[f"l{layer}.{name}.b"] = linear.bias
            for name in NORMS:
                norm = block.norms[name]
                assert isinstance(norm, nn.LayerNorm)
                floats[f"l{layer}.{name}.w"] = norm.weight
                floats[f"l{layer}.{name}.b"] = norm.bias

        def arrays(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
            return {k: v.detach().float().numpy() for k, v in tensors.items()}

        return self.image.with_tensors(arrays(floats), arrays(weights) if matrices else {})
