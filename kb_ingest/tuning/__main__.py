"""`python -m kb_ingest.tuning PATH... --out FILE`: tune the local encoder on a KB's FAQ questions.

Serve the result with `KEFU_E5_MODEL=FILE` (ingest the KB again with it: every vector changes),
after calibrating its thresholds: `python -m kb_ingest.evaluate --kb PATH... --queries Q.jsonl
--calibrate DEV.jsonl --e5-model FILE`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kb_ingest.tuning import Recipe, examples_in, tune_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kb_ingest.tuning", description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="KB files or folders")
    parser.add_argument("--out", type=Path, required=True, help="the tuned image to write")
    parser.add_argument("--epochs", type=int, default=Recipe().epochs)
    parser.add_argument(
        "--base", type=Path, default=None, help="the image to tune (default: the bundled e5)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        parser.error("tuning needs PyTorch: run `make tune-deps` first")
    started = time.perf_counter()
    examples = examples_in(
        args.paths, lambda source, error: print(f"skipped {source}: {error}", file=sys.stderr)
    )
    entries = len({e.entry for e in examples})
    if entries < 2:
        parser.error("no FAQ entries to tune on (at least two are needed)")
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(desc="tune", unit="step", file=sys.stderr)

    def progress(step: int, steps: int, loss: float) -> None:
        if bar is not None:
            bar.total = steps
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            bar.update(step - bar.n)

    tune_image(
        examples, args.out, base=args.base, recipe=Recipe(epochs=args.epochs), progress=progress
    )
    if bar is not None:
        bar.close()
    print(
        f"tuned on {len(examples)} questions of {entries} entries in "
        f"{time.perf_counter() - started:.0f} s: {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
