"""`python -m kb_ingest PATH... [--target local|opensearch]`: index knowledge-base files.

`local` writes the embedded index under KEFU_DATA_DIR (what `make run` serves); `opensearch`
writes the domain at KEFU_OPENSEARCH_URL, signed with the AWS credentials of the environment.
A file that cannot be parsed is reported with its reason and skipped; the rest still lands, and
the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kb_ingest.pipeline import ingest
from kefu.bootstrap import build_embedder, build_index
from kefu.errors import ConfigurationError
from kefu.settings import Settings


class _Progress:
    """One tqdm bar per stage ("read" files, "write" chunks), on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bars: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        unit = "file" if stage == "read" else "chunk"
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit=unit, file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kb_ingest", description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="files or folders to ingest")
    parser.add_argument("--target", choices=["local", "opensearch"], default="local")
    parser.add_argument("--embedder", choices=["e5", "hashing", "bedrock", "sagemaker"])
    parser.add_argument("--tenant", default=None)
    parser.add_argument(
        "--prune", action="store_true", help="remove chunks that no given file produced"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(),
        help="files are named by their path under this folder (default: the working directory)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.target == "opensearch" and not args.embedder:
        # The domain's vectors come from the deployed embedder; a different one cannot search it.
        parser.error("--target opensearch needs --embedder (the one the deployment uses)")

    overrides: dict[str, Any] = {"index": "embedded" if args.target == "local" else "opensearch"}
    if args.embedder:
        overrides["embedder"] = args.embedder
    settings = Settings(**overrides)
    try:
        index = build_index(settings, interactive=False)
        embedder = build_embedder(settings, interactive=False)
    except ConfigurationError as exc:
        print(f"python -m kb_ingest: {exc}", file=sys.stderr)
        return 2
    report = ingest(
        args.paths,
        index=index,
        embedder=embedder,
        tenant=args.tenant or settings.tenant,
        prune=args.prune,
        root=args.root,
        progress=_Progress(enabled=not args.quiet and sys.stderr.isatty()),
    )
    print(report.summary())
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
