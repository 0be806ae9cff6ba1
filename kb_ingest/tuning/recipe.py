"""What tuning is given: the examples and the recipe (no PyTorch here: the CLI and the cache
import this without it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# Bump when a change to the training code would tune a different image from the same examples
# and recipe: cached images of an older version are then tuned again.
VERSION = 1


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    entry: str
    lang: str


@dataclass(frozen=True, slots=True)
class Recipe:
    """How the encoder is tuned; chosen from a handful of runs on the public datasets
    (docs/evaluation.md, "Tuning the local encoder")."""

    epochs: int = 8
    learning_rate: float = 1e-3
    prototype_learning_rate: float = 1e-3
    matrix_learning_rate: float = 1e-4
    batch_size: int = 32
    scale: float = 20.0
    warmup: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    matrices: bool = False


Progress = Callable[[int, int, float], None]  # step, steps, running loss
