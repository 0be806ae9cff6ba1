"""Fine-tune the encoder on a knowledge base's FAQ questions.

Each FAQ entry is a class and its standard and similar questions are its examples. The loss is a
cosine softmax over learned entry prototypes (initialised at each entry's mean question), with
a question competing only against the entries of its own language: a question never pushes away
its entry's twin in another language, which question time filters out anyway.

What moves are the transformer's biases and LayerNorm parameters (BitFit), which the engine
keeps in float32, so the tuned image serves what was trained. Its matrices are 4-bit, and a
tuning step is smaller than their quantization step: tuning them in float32 and re-quantizing
lost the gain. `Recipe(matrices=True)` trains them as the engine will hold them (fake
quantization, straight-through gradient); it ranked no better once the FAQ head re-ranks, so it
is off by default (docs/evaluation.md).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from kb_ingest.tuning.encoder import Block, Encoder
from kb_ingest.tuning.image import Image
from kb_ingest.tuning.recipe import Example, Progress, Recipe


def tune(
    image: Image,
    examples: Sequence[Example],
    recipe: Recipe | None = None,
    progress: Progress | None = None,
) -> bytes:
    """The image with its encoder tuned on `examples`."""
    recipe = recipe or Recipe()
    entries = sorted({e.entry for e in examples})
    if len(entries) < 2:
        raise ValueError("tuning needs at least two FAQ entries")
    torch.manual_seed(recipe.seed)
    order = random.Random(recipe.seed)
    encoder = Encoder(image)
    index = {entry: i for i, entry in enumerate(entries)}
    labels = torch.tensor([index[e.entry] for e in examples])
    rival = torch.from_numpy(rivals(examples, entries))

    encoder.eval()
    vectors = torch.from_numpy(encoder.embed([e.text for e in examples], query=True))
    means = torch.zeros(len(entries), vectors.shape[1]).index_add_(0, labels, vectors)
    prototypes = torch.nn.Parameter(F.normalize(means, dim=-1))

    trained = [p for p in encoder.parameters() if p.requires_grad]
    biases_and_norms = [p for p in trained if p.dim() == 1]
    matrices = [p for p in trained if p.dim() == 2]  # the blocks' (the word embeddings are frozen)
    for parameter in matrices:
        parameter.requires_grad_(recipe.matrices)
    for block in encoder.blocks:
        assert isinstance(block, Block)
        block.quantized = recipe.matrices  # trained as they will be served: 4-bit
    groups = [
        {"params": biases_and_norms, "lr": recipe.learning_rate},
        {"params": [prototypes], "lr": recipe.prototype_learning_rate},
    ]
    if recipe.matrices:
        groups.append({"params": matrices, "lr": recipe.matrix_learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=recipe.weight_decay)
    per_epoch = -(-len(examples) // recipe.batch_size)
    steps = recipe.epochs * per_epoch
    warmup = max(1.0, recipe.warmup * steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (steps - s) / steps)
    )
    positions = list(range(len(examples)))
    step, running = 0, 0.0
    encoder.train()
    for _ in range(recipe.epochs):
        order.shuffle(positions)
        for at in range(0, len(positions), recipe.batch_size):
            rows = positions[at : at + recipe.batch_size]
            batch = encoder.batch([examples[r].text for r in rows], query=True)
            target = labels[rows]
            logits = recipe.scale * encoder(*batch) @ F.normalize(prototypes, dim=-1).T
            logits = logits.masked_fill(~rival[target], float("-inf"))
            loss = F.cross_entropy(logits, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            running = loss.item() if step == 1 else 0.9 * running + 0.1 * loss.item()
            if progress:
                progress(step, steps, running)
    encoder.eval()
    return encoder.to_image(matrices=recipe.matrices)


def rivals(examples: Sequence[Example], entries: Sequence[str]) -> np.ndarray:
    """rival[i, j]: entry j competes for entry i's questions, which it does when both are in
    the same language (a twin in another language is filtered out at question time)."""
    langs = {e.entry: e.lang for e in examples}
    entry_langs = np.array([langs[entry] for entry in entries])
    return np.asarray(entry_langs[:, None] == entry_langs[None, :])
